"""The stack's worker-side fixes to Bokeh and tornado, each small, each replacing one entry point, each saying why.

Every fix names what it replaces and what it assumes of it (`Expect`): that the attribute is there, is a
coroutine or a plain function as the fix needs, takes the parameters it passes, and still uses the names the fix
relies on (its code's names, e.g. that Document.destroy still calls gc.collect). `check()` tests every assumption
before anything is replaced, so a Bokeh upgrade that moved a target stops the worker with a message naming the fix
and the Bokeh version, instead of a fix that silently does nothing. `apply()` records what it replaced, and
`undo()` puts it back (the tests apply a fix in their own process and undo it after).
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import sys
import time
import weakref

from bokeh_stack.config import limits
from bokeh_stack.config.expect import Expect
from bokeh_stack.patches import one_write, page_cost, reconnect
from bokeh_stack.patches.failed_apps import failed_app_answers_500
from bokeh_stack.patches.patching import Fix, FixTargetChanged, _replace, log

# A batch of discarded sessions shares one garbage collection, this long after the first discard, of the young
# generations only: a discarded document's models are unlinked (page_cost.cycles_broken_on_destroy), so reference
# counting has freed it, and a collection of the whole heap would stall every session of the worker (290-470 ms
# at saturation, measured). What reaches the oldest generation is left to Python's own collections.
GC_DELAY_S = 1.0
YOUNG = 1

_open_websockets: weakref.WeakSet = weakref.WeakSet()


def websocket_nodelay() -> None:
    """Send every websocket frame at once (TCP_NODELAY), as tornado advises for websockets, and keep track of the
    open websockets for drain_on_sigterm.

    A Bokeh message is several frames (header, metadata, content, buffers). Without TCP_NODELAY, Nagle's algorithm
    holds the second frame until the first is acknowledged, and a proxy in front (nginx) delays that ACK by up to
    40 ms: every document pull and streamed update through nginx then arrives ~40 ms late.
    """
    from bokeh.server.views.ws import WSHandler

    open_connection = WSHandler.open

    def open_with_nodelay(self: WSHandler) -> None:
        self.set_nodelay(True)
        _open_websockets.add(self)
        return open_connection(self)

    _replace(WSHandler, "open", open_with_nodelay)


class CoalescedCollector:
    """Stands in for the `gc` module where Bokeh destroys a session's document.

    Bokeh runs a full `gc.collect()` for every session it discards, and discards expired sessions back to back:
    300 orphan sessions (page GETs without a websocket) froze a worker for over a minute. One collection of the
    young generations shortly after a batch of discards frees what is left of them (the documents are unlinked).
    """

    def __init__(self, delay_s: float = GC_DELAY_S) -> None:
        self.delay_s = delay_s
        self.pending = False

    def collect(self, generation: int = 2) -> int:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not serving (shutting down): collect now, as Bokeh would
            return gc.collect(generation)
        if not self.pending:
            self.pending = True
            loop.call_later(self.delay_s, self._collect)
        return 0

    def _collect(self) -> None:
        self.pending = False
        gc.collect(YOUNG)
        _release_free_memory()

    def __getattr__(self, name: str):
        return getattr(gc, name)


def _release_free_memory() -> None:
    """Give the heap memory the discarded documents held back to the system (glibc), so RSS follows it down."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def coalesced_gc() -> None:
    """Replace Bokeh's per-session collections (Document.destroy) with one per batch of discards, and leave what
    was imported before the worker started serving out of every collection (gc.freeze), so that each collection
    only walks the objects of live sessions."""
    import bokeh.document.document as document_module
    from bokeh.server.server import Server

    _replace(document_module, "gc", CoalescedCollector())

    run_until_shutdown = Server.run_until_shutdown

    def freeze_then_run(self: Server) -> None:
        gc.collect()
        gc.freeze()
        return run_until_shutdown(self)

    _replace(Server, "run_until_shutdown", freeze_then_run)


def module_cleanup_without_referrer_scan() -> None:
    """Discard a session's app module without searching the whole heap for its referrers.

    Bokeh's DocumentModuleManager.destroy calls gc.get_referrers() on each session's module, only to log a
    warning if something unexpected still refers to it. That walks every object the collector tracks, once per
    discarded session: most of the CPU of a worker discarding a few hundred orphan sessions. The cleanup itself
    (out of sys.modules, namespace cleared) stays as Bokeh does it.
    """
    from bokeh.document.modules import DocumentModuleManager

    def destroy(self: DocumentModuleManager) -> None:
        for module in self._modules:
            if sys.modules.get(module.__name__) is module:
                del sys.modules[module.__name__]
            module.__dict__.clear()
        self._modules = []

    _replace(DocumentModuleManager, "destroy", destroy)


def interleaved_discards() -> None:
    """Let requests run between two discarded sessions.

    Bokeh's unused-session check discards every expired session in one go, never yielding to the event loop in
    between (each discard is a few milliseconds): a hundred orphans held every page view of the worker for half a
    second. Bokeh checks each session again before it discards it, so yielding in between is safe.
    """
    from bokeh.server.contexts import ApplicationContext

    discard = ApplicationContext._discard_session

    async def discard_then_yield(self: ApplicationContext, session, should_discard) -> None:
        await discard(self, session, should_discard)
        await asyncio.sleep(0)

    _replace(ApplicationContext, "_discard_session", discard_then_yield)


def drain_on_sigterm() -> None:
    """On SIGTERM, stop taking connections, close every open websocket cleanly, then exit.

    Bokeh's own SIGTERM handler stops the event loop wherever it is: a websocket can be cut between the frames of
    one Bokeh message, and BokehJS keeps the half message across its reconnect and the tab freezes for good. Here
    each websocket is closed (code 1001) only once it holds its write lock, so never mid-message; BokehJS then
    reconnects at once, and nginx, refused by this worker, sends it to another one.
    """
    from bokeh.server.server import Server

    def drain(self: Server) -> None:
        if getattr(self, "_bokeh_stack_draining", False):  # a second SIGTERM: stop now
            self._loop.stop()
            return
        self._bokeh_stack_draining = True
        sockets = open_websockets()
        print(f"Received signal SIGTERM, closing {len(sockets)} websockets, then shutting down", flush=True)
        self._http.stop()
        asyncio.ensure_future(_close_then_stop(self))

    _replace(Server, "_sigterm", drain)


def open_websockets() -> list:
    """The websocket handlers of this process that are open (tracked by websocket_nodelay)."""
    return [h for h in _open_websockets if h.ws_connection is not None]


async def before_server_close(handler) -> None:
    """What must be done before the server closes this websocket: nothing here; resume/sessions.py has its
    session's record written first, so the worker the tab reconnects to reads all of it."""


async def close_websockets(handlers: list, timeout_s: float, reason: str = "worker restarting") -> bool:
    """Close each websocket (1001) once it holds its write lock, so never between the frames of one message, and
    wait until the clients have answered; False if some were still open after timeout_s."""
    streams = []  # of the websockets told to close; each closes once the client has answered the close frame

    async def close(handler) -> None:
        async with handler.write_lock:
            await before_server_close(handler)
            if handler.ws_connection is not None:
                streams.append(handler.ws_connection.stream)
                handler.close(1001, reason)

    deadline = time.monotonic() + timeout_s
    try:
        await asyncio.wait_for(
            asyncio.gather(*(close(h) for h in handlers), return_exceptions=True), deadline - time.monotonic()
        )
        while not all(stream.closed() for stream in streams):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
    except TimeoutError:
        return False
    return True


async def _close_then_stop(server, timeout_s: float = limits.DRAIN_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    try:
        # Idle keep-alive connections from nginx go first: no new page is served from here.
        asyncio.ensure_future(server._http.close_all_connections())
        # Open, or upgraded on a connection accepted before the listener closed: until none is left.
        while sockets := open_websockets():
            if not await close_websockets(sockets, deadline - time.monotonic()):
                log.warning("websockets still closing after %s s: stopping anyway", timeout_s)
                break
            await asyncio.sleep(0.02)
    finally:
        server._loop.stop()


def ready_on_rebuild() -> None:
    """Send DocumentReady to a session a websocket had to build from its token.

    Apps start their periodic work on DocumentReady, which BokehJS sends once per page. When a worker restarts,
    BokehJS reconnects to another worker, which builds the session afresh from the token; the tab re-pulls the
    document but never sends DocumentReady again, so a streaming app would stand still. The page is already
    rendered in that case, so the worker sends the event itself. Apps must treat DocumentReady as idempotent (a
    tab whose page and websocket reached different workers sends it too)."""
    from bokeh.events import DocumentReady
    from bokeh.protocol.exceptions import ProtocolError
    from bokeh.server.views.ws import WSHandler
    from bokeh.util.token import get_session_id

    async_open = WSHandler._async_open

    async def open_then_ready(self: WSHandler, token: str) -> None:
        try:
            self.application_context.get_session(get_session_id(token))
            rebuilt = False
        except ProtocolError:
            rebuilt = True
        await async_open(self, token)
        if rebuilt and self.connection is not None:
            session = self.connection.session
            await session.with_document_locked(lambda: session.document.callbacks.trigger_event(DocumentReady()))

    _replace(WSHandler, "_async_open", open_then_ready)


def accept_headers_nginx_accepts(max_header_bytes: int = limits.WORKER_MAX_HEADER_BYTES) -> None:
    """Let the worker read request headers as large as nginx lets through, so an oversized request gets nginx's
    400 and never a 502 from a worker that hung up on it (tornado's own limit is 64 KiB)."""
    from bokeh.server.server import Server

    init = Server.__init__

    def init_with_header_limit(self: Server, *args, http_server_kwargs=None, **kwargs) -> None:
        http_server_kwargs = dict(http_server_kwargs or {})
        http_server_kwargs.setdefault("max_header_size", max_header_bytes)
        init(self, *args, http_server_kwargs=http_server_kwargs, **kwargs)

    _replace(Server, "__init__", init_with_header_limit)


def references_on_demand() -> None:
    """Serialize a document patch without a Ref for every model of the document. For each PATCH-DOC message (each
    streamed or changed value of every session), Bokeh builds a set of all the document's synced models, then a Ref
    for each: 27% of a streaming worker's CPU in py-spy. Here a model is looked up when the message mentions it."""
    from bokeh.core.serialization import Ref, Serializer
    from bokeh.document.models import DocumentModelManager
    from bokeh.model import Model

    class SyncedModels:
        """The document's models the client has (the same as Bokeh's set), one membership test at a time."""

        def __init__(self, manager: DocumentModelManager) -> None:
            self._manager = manager

        def __contains__(self, obj: object) -> bool:
            manager = self._manager
            return isinstance(obj, Model) and manager._models.get(obj.id) is obj and obj not in manager._new_models

        def __iter__(self):
            return (m for m in self._manager._models.values() if m not in self._manager._new_models)

    class OnDemandSerializer(Serializer):
        def __init__(self, *, references=(), **kwargs) -> None:
            super().__init__(**kwargs)
            self._synced = references

        def has_ref(self, obj: object) -> bool:
            return super().has_ref(obj) or obj in self._synced

        def get_ref(self, obj: object) -> Ref | None:
            ref = super().get_ref(obj)
            if ref is None and obj in self._synced:
                ref = self._references[id(obj)] = obj.ref
            return ref

    _replace(DocumentModelManager, "synced_references", property(SyncedModels))
    _replace(sys.modules["bokeh.protocol.messages.patch_doc"], "Serializer", OnDemandSerializer)


WS = "bokeh.server.views.ws:WSHandler"
SERVER = "bokeh.server.server:Server"
FIXES = (
    (
        Fix(
            "websocket_nodelay",
            websocket_nodelay,
            (Expect(f"{WS}.open", uses=("_async_open",)), Expect("tornado.websocket:WebSocketHandler.set_nodelay")),
        ),
        Fix(
            "references_on_demand",
            references_on_demand,
            (
                Expect("bokeh.protocol.messages.patch_doc:patch_doc.create", uses=("Serializer", "synced_references")),
                Expect("bokeh.protocol.messages.patch_doc:Serializer"),
                Expect("bokeh.document.models:DocumentModelManager.synced_references"),
                Expect("bokeh.document.models:DocumentModelManager.__init__", uses=("_models", "_new_models")),
                Expect("bokeh.core.serialization:Serializer.__init__", uses=("_references",), params=("references",)),
                Expect("bokeh.core.serialization:Serializer.has_ref"),
                Expect("bokeh.core.serialization:Serializer.get_ref"),
            ),
        ),
        Fix(
            "coalesced_gc",
            coalesced_gc,
            (
                Expect("bokeh.document.document:gc"),
                Expect("bokeh.document.document:Document.destroy", uses=("gc", "collect")),
                Expect(f"{SERVER}.run_until_shutdown", uses=("_sigterm",)),
            ),
        ),
        Fix(
            "module_cleanup_without_referrer_scan",
            module_cleanup_without_referrer_scan,
            (
                Expect("bokeh.document.modules:DocumentModuleManager.destroy", uses=("get_referrers", "_modules")),
                Expect("bokeh.document.modules:DocumentModuleManager.__init__", uses=("_modules",)),
            ),
        ),
        Fix(
            "interleaved_discards",
            interleaved_discards,
            (
                Expect("bokeh.server.contexts:ApplicationContext._discard_session", coroutine=True),
                Expect("bokeh.server.contexts:ApplicationContext._cleanup_sessions", uses=("_discard_session",)),
            ),
        ),
        Fix(
            "drain_on_sigterm",
            drain_on_sigterm,
            (
                Expect(f"{SERVER}._sigterm", coroutine=False, uses=("_loop",)),
                Expect("bokeh.server.server:BaseServer.__init__", uses=("_http", "_loop")),
                Expect("tornado.httpserver:HTTPServer.close_all_connections", coroutine=True),
                Expect("tornado.websocket:WebSocketHandler.close", params=("code", "reason")),
                Expect(f"{WS}.__init__", uses=("write_lock",)),
                Expect("tornado.websocket:WebSocketHandler.__init__", uses=("ws_connection",)),
                Expect("tornado.websocket:WebSocketProtocol.__init__", uses=("stream",)),
            ),
        ),
        Fix(
            "ready_on_rebuild",
            ready_on_rebuild,
            (
                Expect(f"{WS}._async_open", coroutine=True, params=("token",), uses=("create_session_if_needed",)),
                Expect("bokeh.server.contexts:ApplicationContext.get_session", uses=("ProtocolError",)),
                Expect("bokeh.server.session:ServerSession.with_document_locked", coroutine=True),
                Expect("bokeh.document.document:Document.__init__", uses=("callbacks",)),
                Expect("bokeh.document.callbacks:DocumentCallbackManager.trigger_event", params=("event",)),
            ),
        ),
        Fix(
            "failed_app_answers_500",
            failed_app_answers_500,
            (
                Expect("bokeh.application.application:Application.initialize_document", uses=("modify_document",)),
                Expect("bokeh.application.handlers.handler:Handler.failed"),
                Expect("bokeh.application.handlers.handler:Handler.error"),
                Expect("bokeh.application.handlers.handler:Handler.error_detail"),
                Expect("bokeh.server.views.session_handler:SessionHandler.get_session", coroutine=True),
                Expect("tornado.web:Finish"),
            ),
        ),
        Fix(
            "accept_headers_nginx_accepts",
            accept_headers_nginx_accepts,
            (Expect(f"{SERVER}.__init__", params=("http_server_kwargs",)),),
        ),
    )
    + page_cost.FIXES
    + one_write.FIXES
    + reconnect.FIXES
)


def check(fixes: tuple[Fix, ...] = FIXES) -> dict[str, list[str]]:
    """fix name -> what it assumes of Bokeh that is not so (empty: every fix fits)."""
    return {fix.name: problems for fix in fixes if (problems := fix.problems())}


def apply(fixes: tuple[Fix, ...] = FIXES, on_mismatch: str = "stop") -> list[str]:
    """Check every fix, then apply those that fit. A fix that does not fit raises FixTargetChanged, or with
    on_mismatch="warn" is left out with a warning; returns the names of the fixes left out."""
    from bokeh import __version__ as bokeh_version

    changed = check(fixes)
    if changed and on_mismatch != "warn":
        lines = [f"  {name}: {'; '.join(problems)}" for name, problems in changed.items()]
        raise FixTargetChanged(
            f"bokeh-stack's worker fixes do not fit Bokeh {bokeh_version}:\n" + "\n".join(lines) + "\n"
            "Install the Bokeh version bokeh-stack is tested with (pyproject.toml), or set worker_fix_mismatch: warn "
            "to run without these fixes."
        )
    for name, problems in changed.items():
        log.warning("worker fix %s left out: it does not fit Bokeh %s (%s)", name, bokeh_version, "; ".join(problems))
    for fix in fixes:
        if fix.name not in changed:
            fix.apply()
    return list(changed)
