"""A Bokeh server for programs that embed their own: `bokeh_stack.embed.Server` takes the arguments of
`bokeh.server.server.Server` and serves the same way, with the stack's worker fixes applied (patches/fixes.py,
patches/hardening.py): orphan sessions discarded without stalling the server, one garbage collection per batch
of discards, a failed app answering 500, request headers as large as a proxy lets through, websockets without
Nagle delays, tokens without credentials and bound to their app, protocol errors without tracebacks.

And a stop that leaves nothing behind. Bokeh's own `Server.stop()` ("TODO should probably close all connections and
shut down all sessions here") leaves every session alive, with its periodic callbacks running on the event loop,
and every websocket open: a notebook that starts a server per cell, rerun often, piles them up. Here `stop()`
closes the websockets (1001), destroys every session (its callbacks with it, on_session_destroyed hooks run) and
closes the connections; `await server.drain()` first lets each websocket finish the message it is sending.

The fixes replace methods of Bokeh's classes, so they hold for the whole process: the first embed.Server applies
them (checked against the installed Bokeh first), and a plain bokeh Server in the same process gets them too.
"""

from __future__ import annotations

from typing import Any

from bokeh.server.server import Server as BokehServer

from bokeh_stack.config import limits
from bokeh_stack.config.expect import Expect, unmet
from bokeh_stack.config.groups import Session
from bokeh_stack.patches import fixes, hardening
from bokeh_stack.patches.patching import FixTargetChanged

# Request headers a session token never carries (Bokeh copies every request header into the token it embeds in the
# page, readable by any script there), unless include_headers or exclude_headers is given.
CREDENTIAL_HEADERS = ["Authorization", "Cookie", "Proxy-Authorization"]
# Which fixes, by name: the stack's log bounds replace the process's log record factory, which a program embedding
# a server owns (its own logging), so they are left to it.
FIXES = fixes.FIXES + tuple(fix for fix in hardening.FIXES if fix.name != "bounded_log_records")

STOPPING = "server stopping"  # the websockets' close reason

_applied = False


def apply_fixes() -> None:
    """Apply the fixes once per process; FixTargetChanged (naming the fix and what changed) if one does not fit
    the installed Bokeh."""
    global _applied
    if _applied:
        return
    changed = unmet(EXPECTS)
    if changed:
        raise FixTargetChanged(f"bokeh_stack.embed.Server does not fit this Bokeh: {'; '.join(changed)}")
    fixes.apply(FIXES)
    _applied = True


def session_defaults() -> dict[str, Any]:
    """The stack's session settings (defaults.yaml), as Server keyword arguments."""
    session = Session().model_dump()
    return {
        "unused_session_lifetime_milliseconds": session["unused_lifetime_ms"],
        "check_unused_sessions_milliseconds": session["check_unused_ms"],
    }


class Server(BokehServer):
    """`bokeh.server.server.Server` with the stack's fixes, its session defaults and a stop that releases every
    session, callback, websocket and connection."""

    def __init__(self, applications: Any, io_loop: Any = None, http_server_kwargs: Any = None, **kwargs: Any):
        apply_fixes()
        for key, value in session_defaults().items():
            kwargs.setdefault(key, value)
        if "include_headers" not in kwargs and "exclude_headers" not in kwargs:
            kwargs["exclude_headers"] = CREDENTIAL_HEADERS
        super().__init__(applications, io_loop=io_loop, http_server_kwargs=http_server_kwargs, **kwargs)

    def websockets(self) -> list[Any]:
        """This server's open websocket handlers."""
        return [h for h in fixes.open_websockets() if h.application is self._tornado]

    async def drain(self, timeout_s: float = limits.DRAIN_TIMEOUT_S) -> None:
        """Stop taking connections, close every websocket once it has sent its current message, then stop()."""
        self._http.stop()
        await fixes.close_websockets(self.websockets(), timeout_s, STOPPING)
        self.stop()

    def stop(self, wait: bool = True) -> None:
        if self._stopped:
            return
        for handler in self.websockets():
            connection, handler.connection = handler.connection, None  # its on_close has nothing left to do
            if connection is not None:  # what on_close does, now: the session must still exist for it
                connection.session.notify_connection_lost()
                self._tornado.client_lost(connection)
            handler.close(1001, STOPPING)
        super().stop(wait)
        for context in self._tornado.applications.values():
            for session in list(context.sessions):
                self._destroy(context, session)
        self.io_loop.add_callback(self._http.close_all_connections)

    def _destroy(self, context: Any, session: Any) -> None:
        """Destroy a session now (its document, its callbacks); its app's on_session_destroyed hooks run on the
        loop."""
        session_context = context._session_contexts.pop(session.id, None)
        context._sessions.pop(session.id, None)
        if not session.destroyed:
            session.destroy()
        if session_context is not None:
            self.io_loop.add_callback(context.application.on_session_destroyed, session_context)


EXPECTS = (
    Expect("bokeh.server.server:BaseServer.stop", uses=("_stopped", "_tornado", "_http")),
    Expect("bokeh.server.tornado:BokehTornado.applications"),
    Expect("bokeh.server.contexts:ApplicationContext.__init__", uses=("_sessions", "_session_contexts")),
    Expect("bokeh.server.contexts:ApplicationContext.sessions"),
    Expect("bokeh.server.session:ServerSession.destroy"),
    Expect("bokeh.server.session:ServerSession.destroyed"),
    Expect("bokeh.application.application:Application.on_session_destroyed", coroutine=True),
    Expect("tornado.web:RequestHandler.__init__", uses=("application",)),
    Expect("bokeh.server.views.ws:WSHandler.on_close", uses=("connection", "notify_connection_lost", "client_lost")),
)
