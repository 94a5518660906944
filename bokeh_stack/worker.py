"""A bokeh-stack worker: `python -m bokeh_stack.worker ARGS_FILE PORT` runs `bokeh` with the arguments in ARGS_FILE
(one per line, rendered from supervisor/worker.args.j2; {port} replaced by PORT), with the stack's worker-side
fixes applied first. Each fix is small, patches one Bokeh or tornado entry point, and says why it is here."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import sys
import time
import weakref

log = logging.getLogger("bokeh_stack.worker")

# A batch of discarded sessions shares one garbage collection, this long after the first discard.
GC_DELAY_S = 1.0
# On SIGTERM, how long open websockets get to finish the message they are sending and close cleanly.
DRAIN_TIMEOUT_S = 3.0
# Above the most nginx passes on (large_client_header_buffers 4 32k, plus the headers nginx adds).
MAX_HEADER_BYTES = 256 * 1024

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

    WSHandler.open = open_with_nodelay


class CoalescedCollector:
    """Stands in for the `gc` module where Bokeh destroys a session's document.

    Bokeh runs a full `gc.collect()` for every session it discards, and discards expired sessions back to back:
    300 orphan sessions (page GETs without a websocket) froze a worker for over a minute. One collection shortly
    after a batch of discards frees the same memory (the documents are already unlinked) at the cost of one.
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
        gc.collect()
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

    document_module.gc = CoalescedCollector()

    run_until_shutdown = Server.run_until_shutdown

    def freeze_then_run(self: Server) -> None:
        gc.collect()
        gc.freeze()
        return run_until_shutdown(self)

    Server.run_until_shutdown = freeze_then_run


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

    DocumentModuleManager.destroy = destroy


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

    ApplicationContext._discard_session = discard_then_yield


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
        sockets = [h for h in _open_websockets if h.ws_connection is not None]
        print(f"Received signal SIGTERM, closing {len(sockets)} websockets, then shutting down", flush=True)
        self._http.stop()
        asyncio.ensure_future(_close_then_stop(self))

    Server._sigterm = drain


async def _close_then_stop(server) -> None:
    streams = []  # of the websockets told to close; each closes once the client has answered the close frame

    async def close(handler) -> None:
        async with handler.write_lock:
            if handler.ws_connection is not None:
                streams.append(handler.ws_connection.stream)
                handler.close(1001, "worker restarting")

    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    try:
        # Idle keep-alive connections from nginx go first: no new page is served from here.
        asyncio.ensure_future(server._http.close_all_connections())
        while time.monotonic() < deadline:
            # Open, or upgraded on a connection accepted before the listener closed.
            sockets = [h for h in _open_websockets if h.ws_connection is not None]
            if sockets:
                await asyncio.wait_for(
                    asyncio.gather(*(close(h) for h in sockets), return_exceptions=True), deadline - time.monotonic()
                )
            elif all(stream.closed() for stream in streams):
                break
            await asyncio.sleep(0.02)
        else:
            log.warning("websockets still closing after %s s: stopping anyway", DRAIN_TIMEOUT_S)
    except TimeoutError:
        log.warning("websockets still busy after %s s: stopping anyway", DRAIN_TIMEOUT_S)
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

    WSHandler._async_open = open_then_ready


def failed_app_answers_500() -> None:
    """A page whose app raised while building the document answers 500 instead of an empty page.

    Bokeh logs the error and serves the broken session as a blank page with status 200: users see nothing and
    monitoring sees success. The session is left to expire like any unused one.
    """
    from bokeh.application.application import Application
    from bokeh.server.views.session_handler import SessionHandler
    from tornado.web import HTTPError

    initialize_document = Application.initialize_document

    def initialize_and_flag(self: Application, doc) -> None:
        initialize_document(self, doc)
        failed = [h for h in self.handlers if h.failed]
        if failed:
            doc._bokeh_stack_error = "; ".join(f"{h.error}" for h in failed)

    get_session = SessionHandler.get_session

    async def get_session_or_500(self: SessionHandler):
        session = await get_session(self)
        error = getattr(session.document, "_bokeh_stack_error", None)
        if error is not None:
            raise HTTPError(500, reason="the app failed to build its page", log_message=error)
        return session

    Application.initialize_document = initialize_and_flag
    SessionHandler.get_session = get_session_or_500


def accept_headers_nginx_accepts(max_header_bytes: int = MAX_HEADER_BYTES) -> None:
    """Let the worker read request headers as large as nginx lets through (4 x 32k), so an oversized request gets
    nginx's 400 and never a 502 from a worker that hung up on it (tornado's own limit is 64 KiB)."""
    from bokeh.server.server import Server

    init = Server.__init__

    def init_with_header_limit(self: Server, *args, http_server_kwargs=None, **kwargs) -> None:
        http_server_kwargs = dict(http_server_kwargs or {})
        http_server_kwargs.setdefault("max_header_size", max_header_bytes)
        init(self, *args, http_server_kwargs=http_server_kwargs, **kwargs)

    Server.__init__ = init_with_header_limit


def references_on_demand() -> None:
    """Serialize a document patch without a Ref for every model of the document. For each PATCH-DOC message (each
    streamed or changed value of every session), Bokeh builds a set of all the document's synced models, then a Ref
    for each: 27% of a streaming worker's CPU in py-spy. Here a model is looked up when the message mentions it."""
    from bokeh.core.serialization import Ref, Serializer
    from bokeh.document.models import DocumentModelManager
    from bokeh.model import Model
    from bokeh.protocol.messages import patch_doc  # noqa: F401  (the module, below; the name is its message class)

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

    DocumentModelManager.synced_references = property(SyncedModels)
    sys.modules["bokeh.protocol.messages.patch_doc"].Serializer = OnDemandSerializer


FIXES = (
    websocket_nodelay,
    references_on_demand,
    coalesced_gc,
    module_cleanup_without_referrer_scan,
    interleaved_discards,
    drain_on_sigterm,
    ready_on_rebuild,
    failed_app_answers_500,
    accept_headers_nginx_accepts,
)


def read_args(args_file: str, port: str) -> list[str]:
    with open(args_file) as f:
        return [line.replace("{port}", port) for line in f.read().splitlines() if line]


def main(argv: list[str]) -> None:
    plain = argv[:1] == ["--plain"]
    argv = argv[1:] if plain else argv
    if len(argv) != 2 or not argv[1].isdigit():
        sys.exit("usage: python -m bokeh_stack.worker [--plain] ARGS_FILE PORT")
    args = read_args(*argv)
    # --plain (setting worker_fixes: false) runs Bokeh as it is, to tell its behaviour from ours.
    for fix in () if plain else FIXES:
        fix()
    from bokeh.command.bootstrap import main as bokeh_main

    bokeh_main(["bokeh", *args])


if __name__ == "__main__":
    main(sys.argv[1:])
