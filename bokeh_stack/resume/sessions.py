"""Resume a session in whichever worker its tab reconnects to, as its user left it.

Each session's PATCH-DOC messages from its browser (what its user did: widget values, ranges, selections, clicks,
DocumentReady) are recorded in the store as they are applied. When a tab's websocket reaches a worker that does not
know its session (its worker went away), that worker reads the record, builds the session as always, and applies
the recorded messages in order, the way Bokeh applies a browser's: the app's on_change and event callbacks run
again, so whatever the app derived from them comes back too. The tab then pulls that document.

Model ids are made the same in every worker (resume/ids.py), so a recorded message names the same models wherever it
is replayed. A record is resumed only by the token that made it, for the same app and user; with no record, an
unreadable or slow store, or a record past its size bound, the session starts afresh: resuming never fails a page.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass

from bokeh_stack.config.expect import Expect
from bokeh_stack.identity import USER_HEADER
from bokeh_stack.patches import worker_metrics
from bokeh_stack.patches.patching import Fix, _replace
from bokeh_stack.resume import RESUMED_ATTR, Resumed, ids
from bokeh_stack.resume.record import (
    OVERFLOW,
    Entry,
    Owner,
    Record,
    RecordError,
    key,
    merge_key,
    parse,
    users_doing,
)
from bokeh_stack.resume.stores import StoreError, open_store

log = logging.getLogger("bokeh_stack.resume")
# A run of messages that only set properties is written this long after it starts (see Recorder).
MERGE_WINDOW_S = 0.25
# The most characters of a stored value a log line quotes.
LOG_CHARS = 200
# The longest a worker waits for a tab's record to be written before it closes the tab's websocket itself.
SETTLE_TIMEOUT_S = 1.0
_RECORDER = "_bokeh_stack_recorder"
_CLOSED_HERE = "_bokeh_stack_closed_here"
# The close codes of a browser leaving a page (1001) or BokehJS closing its connection (1000).
TAB_LEFT_CODES = (1000, 1001)


@dataclass
class Config:
    store: object = None  # a resume.stores store; None: no session is recorded or resumed
    max_bytes: int = 1 << 20
    skip_apps: frozenset[str] = frozenset()  # app routes (/name) whose sessions are neither recorded nor resumed


config = Config()


def configure(store: str, max_bytes: int, skip_apps: list[str], password: str = "") -> None:
    """Record and resume sessions in `store` (a directory, or a redis:// URL), up to `max_bytes` a session, except
    the sessions of the apps named in `skip_apps`."""
    config.store = open_store(store, password)
    config.max_bytes = max_bytes
    config.skip_apps = frozenset(f"/{name.strip('/')}" for name in skip_apps)


def outcome(app: str, result: str) -> None:
    """What became of a session a tab reconnected to here (limits.RESUME_OUTCOMES), counted."""
    metrics = worker_metrics.current()
    if metrics is not None:
        metrics.resumed.labels(worker_metrics.app_label(app), result).inc()


class Recorder:
    """A session's record as it is written: the owner line before the first message, then a line per message.
    Messages that only set properties come in runs (a slider dragged, a plot panned: many a second); a run is
    written MERGE_WINDOW_S after it starts, each set of properties once, with its last values, in the order of
    their last change.

    A record has one writer at a time: the worker its tab is connected to. When the server closes the tab's
    websocket (a drain, a sign-out) the tab is handed over: what is held is written first, and nothing after
    (until the tab connects here again), since the worker it reconnects to reads the record and writes on from
    there. A second writer would number its lines after a record the other had grown, and no one could resume it.
    """

    def __init__(self, record_key: str, owner: Owner, expires: float, kept: Record | None = None) -> None:
        self.key, self.owner, self.expires = record_key, owner, expires
        # Bytes kept (0: not even the owner line yet), and messages kept; `kept`: the record a resume went on from.
        self.size, self.count = (kept.size, len(kept.entries)) if kept else (0, 0)
        self.full = False
        self.handed_over = False
        self._run: dict[frozenset, Entry] = {}
        self._timer: asyncio.TimerHandle | None = None

    def add(self, message) -> None:
        content = message.content
        if self.full or self.handed_over or not users_doing(content):
            return
        entry, merge = Entry.of(message), merge_key(content)
        if merge is None:
            self.flush()
            self._write([entry])
            return
        if not self._run:
            self._timer = asyncio.get_running_loop().call_later(MERGE_WINDOW_S, self.flush)
        self._run.pop(merge, None)
        self._run[merge] = entry

    def forget(self) -> None:
        """The tab is gone for good: nothing more is kept, and what was is removed."""
        self.full, self._run = True, {}
        if self._timer is not None:
            self._timer.cancel()
        if self.size:
            config.store.delete(self.key)

    def hand_over(self) -> None:
        self.flush()
        self.handed_over = True

    async def settle(self) -> None:
        """Write what is held, and return once the store has it (and whatever came in while it was written)."""
        while True:
            self.flush()
            size = self.size
            await config.store.written()
            if self.size == size and not self._run:
                return

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._run:
            entries, self._run = list(self._run.values()), {}
            self._write(entries)

    def _write(self, entries: list[Entry]) -> None:
        owner = [] if self.size else [self.owner.line()]
        lines = owner + [entry.line(number) for number, entry in enumerate(entries, start=self.count + 1)]
        size = self.size + sum(len(line) + 1 for line in lines)
        if size > config.max_bytes:
            self.full = True
            lines = owner + [OVERFLOW]
            log.warning("session record %s… past session.resume_max_bytes: it will not be resumed", self.key[:12])
        self.size, self.count = size, self.count + len(entries)
        try:
            config.store.append(self.key, lines, self.expires)
        except Exception as e:  # a queue that cannot take more: the record is incomplete, so never resumed
            self.full = True
            log.warning("session record %s… not written (%s): it will not be resumed", self.key[:12], e)


def _owner(token: str, app: str) -> tuple[Owner, float]:
    """Whose the session is (its token, app and user), and when its token expires."""
    from bokeh.util.token import get_token_payload

    payload = get_token_payload(token)
    user = (payload.get("headers") or {}).get(USER_HEADER, "")
    return Owner.of(token, app, user), float(payload.get("session_expiry", 0))


def _replay(session, record: Record) -> None:
    """Apply the recorded messages to the new session's document, in order, as Bokeh applies a browser's."""
    from bokeh.protocol import Protocol

    protocol = Protocol()
    for entry in record.entries:
        header = json.dumps({"msgid": "resume", "msgtype": "PATCH-DOC", "num_buffers": len(entry.buffers)})
        message = protocol.assemble(header, "{}", entry.content_json)
        for buffer_id, data in entry.buffers:
            message.assemble_buffer({"id": buffer_id}, data)
        message.apply_to_document(session.document, session)


async def _load(app: str, session_id: str, owner: Owner) -> Record | None:
    """The session's record if it may be resumed here; None (and the outcome counted) if not."""
    try:
        lines = await config.store.load(key(session_id))
        record = parse(lines) if lines else None
    except (StoreError, RecordError) as e:
        log.warning("resume of a session of %s: %s", app, str(e)[:LOG_CHARS])
        outcome(app, "failed")
        return None
    if record is None or record.owner != owner:
        outcome(app, "fresh")  # nothing kept, or kept for another token, app or user
        return None
    if record.overflowed:
        log.warning("resume of a session of %s: its record is past session.resume_max_bytes", app)
        outcome(app, "failed")
        return None
    return record


def recorded_sessions() -> None:
    """Record what each session's browser sends (ServerSession applies it through patch_doc.apply_to_document)."""
    from bokeh.protocol.messages.patch_doc import patch_doc
    from bokeh.server.session import ServerSession

    apply = patch_doc.apply_to_document

    def apply_recorded(self: patch_doc, doc, setter=None) -> None:
        apply(self, doc, setter)
        recorder = isinstance(setter, ServerSession) and setter.__dict__.get(_RECORDER)
        if recorder:
            recorder.add(self)

    _replace(patch_doc, "apply_to_document", apply_recorded)


def _recorder_of(handler) -> Recorder | None:
    return handler.connection is not None and handler.connection.session.__dict__.get(_RECORDER) or None


def recorded_from_the_start() -> None:
    """Every session built from a page's token gets a recorder (the apps in session.resume_except aside)."""
    from bokeh.server.contexts import ApplicationContext

    create = ApplicationContext.create_session_if_needed

    async def create_recorded(self: ApplicationContext, session_id, request=None, token=None):
        built = not _known(self, session_id)
        session = await create(self, session_id, request, token)
        if built and token and self.url not in config.skip_apps:
            owner, expires = _owner(token, self.url)
            session.__dict__[_RECORDER] = Recorder(key(session_id), owner, expires)
        return session

    _replace(ApplicationContext, "create_session_if_needed", create_recorded)


def forgotten_when_the_tab_leaves() -> None:
    """A tab that closes its websocket itself (closed, reloaded, navigated away: BokehJS does not reconnect then)
    leaves no record behind. A websocket the server closes (a drain, a sign-out: the tab is handed over) or that
    drops keeps it, and what its recorder holds is written at once: the tab may be reconnecting elsewhere."""
    from bokeh.server.views.ws import WSHandler

    close, on_close = WSHandler.close, WSHandler.on_close

    def close_by_the_server(self: WSHandler, code=None, reason=None) -> None:
        self.__dict__[_CLOSED_HERE] = True
        if recorder := _recorder_of(self):
            recorder.hand_over()
        return close(self, code, reason)

    def on_close_forgetting(self: WSHandler) -> None:
        if recorder := _recorder_of(self):
            if self.close_code in TAB_LEFT_CODES and not self.__dict__.get(_CLOSED_HERE):
                recorder.forget()
            else:
                recorder.flush()
        return on_close(self)

    _replace(WSHandler, "close", close_by_the_server)
    _replace(WSHandler, "on_close", on_close_forgetting)


def settled_before_the_server_closes() -> None:
    """A worker that closes websockets itself (a drain: fixes.close_websockets) first has each tab's record
    written, within SETTLE_TIMEOUT_S: the worker the tab reconnects to, a few milliseconds later, reads all of
    it, a slider still being dragged included."""
    from bokeh_stack.patches import fixes

    async def settle_record(handler) -> None:
        if recorder := _recorder_of(handler):
            try:
                await asyncio.wait_for(recorder.settle(), SETTLE_TIMEOUT_S)
            except Exception as e:  # a slow or failed store: the tab is handed over with what was written
                log.warning("session record %s… not written before its tab was handed over: %r", recorder.key[:12], e)

    _replace(fixes, "before_server_close", settle_record)


def _known(context, session_id: str) -> bool:
    return session_id in context._sessions or session_id in context._pending_sessions


def resumed_on_reconnect() -> None:
    """A websocket whose session this worker does not know (its worker went away) has the session's record read,
    within the store's bound; with one, the session is built and the record replayed before Bokeh's own open
    finds it, and recording goes on after what was replayed. DocumentReady comes from the record (the browser's
    own, in its place) or, if it holds none, after the replay. A tab handed over that comes back to a worker that
    knows its session is recorded here again."""
    from bokeh.events import DocumentReady
    from bokeh.server.views.ws import WSHandler
    from bokeh.util.token import get_session_id

    async_open = WSHandler._async_open

    async def resume_if_unknown(self: WSHandler, token: str) -> None:
        context, session_id = self.application_context, get_session_id(token)
        app = context.url
        if _known(context, session_id) or app in config.skip_apps:
            return
        owner, expires = _owner(token, app)
        record = await _load(app, session_id, owner)
        if record is None or _known(context, session_id):
            return
        session = await context.create_session_if_needed(session_id, self.request, token)
        session.__dict__[_RECORDER] = None  # what is replayed is in the record already
        # Known to the app's callbacks from the first message replayed (DocumentReady, usually).
        session.document.__dict__[RESUMED_ATTR] = Resumed(len(record.entries), record.ready)
        try:
            await session.with_document_locked(lambda: _replay(session, record))
        except Exception as e:  # the app did not build what it built before (see resume/ids.py)
            log.warning("resume of a session of %s stopped: %s", app, str(e)[:LOG_CHARS])
            del session.document.__dict__[RESUMED_ATTR]
            outcome(app, "failed")
            Recorder(key(session_id), owner, expires, kept=record).forget()  # nor will it next time
            return
        outcome(app, "resumed")
        session.__dict__[_RECORDER] = Recorder(key(session_id), owner, expires, kept=record)
        if not record.ready:
            await session.with_document_locked(lambda: session.document.callbacks.trigger_event(DocumentReady()))

    async def open_resumed(self: WSHandler, token: str) -> None:
        await resume_if_unknown(self, token)
        await async_open(self, token)
        if recorder := _recorder_of(self):
            recorder.handed_over = False  # the tab is back on a worker that knew its session: recording goes on

    _replace(WSHandler, "_async_open", open_resumed)


FIXES = (
    *ids.FIXES,
    Fix(
        "recorded_sessions",
        recorded_sessions,
        (
            Expect("bokeh.protocol.messages.patch_doc:patch_doc.apply_to_document", params=("doc", "setter")),
            Expect("bokeh.server.session:ServerSession._handle_patch", uses=("apply_to_document",)),
            Expect("bokeh.protocol.message:Message.content"),
            Expect("bokeh.protocol.message:Message.content_json"),
            Expect("bokeh.protocol.message:Message.buffers"),
        ),
    ),
    Fix(
        "recorded_from_the_start",
        recorded_from_the_start,
        (
            Expect(
                "bokeh.server.contexts:ApplicationContext.create_session_if_needed",
                coroutine=True,
                params=("session_id", "request", "token"),
                uses=("_sessions", "_pending_sessions"),
            ),  # fmt: skip
            Expect("bokeh.server.contexts:ApplicationContext.url"),
            Expect("bokeh.util.token:get_token_payload"),
        ),
    ),
    Fix(
        "forgotten_when_the_tab_leaves",
        forgotten_when_the_tab_leaves,
        (
            Expect("tornado.websocket:WebSocketHandler.close", params=("code", "reason")),
            Expect("bokeh.server.views.ws:WSHandler.on_close", uses=("close_code", "connection")),
            Expect("tornado.websocket:WebSocketHandler.on_ws_connection_close", uses=("close_code",)),
            Expect("bokeh.server.connection:ServerConnection.session"),
        ),
    ),
    Fix(
        "settled_before_the_server_closes",
        settled_before_the_server_closes,
        (Expect("bokeh_stack.patches.fixes:before_server_close", coroutine=True, params=("handler",)),),
    ),
    Fix(
        "resumed_on_reconnect",
        resumed_on_reconnect,
        (
            Expect(
                "bokeh.server.views.ws:WSHandler._async_open",
                coroutine=True,
                params=("token",),
                uses=("create_session_if_needed", "get_session_id", "connection"),
            ),  # fmt: skip
            Expect("bokeh.server.session:ServerSession.with_document_locked", coroutine=True),
            Expect("bokeh.protocol:Protocol.assemble", params=("header_json", "metadata_json", "content_json")),
            Expect("bokeh.protocol.message:Message.assemble_buffer", params=("buf_header", "buf_payload")),
            Expect("bokeh.document.callbacks:DocumentCallbackManager.trigger_event", params=("event",)),
        ),
    ),
)
