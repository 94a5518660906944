"""A live feed that many sessions show, computed once per tick per worker and serialized once.

    from bokeh_stack.feed import Feed

    def read_instrument() -> dict:                       # one tick's new rows, column -> values
        return {"t": [time.time() * 1000], "value": [probe.read()]}

    feed = Feed.shared("instrument", read_instrument, period_ms=100, rollover=600)
    source = ColumnDataSource(data={"t": [], "value": []})
    feed.attach(source)                                  # this session shows the feed

With `source.stream(...)` in a periodic callback of each session, a worker computes the same values once per
session, and Bokeh builds, serializes and sends a message for each, frame by frame. A Feed computes the rows once
per tick, has Bokeh serialize the ColumnsStreamed patch once (a PATCH-DOC message like any other), and for each
attached source appends the rows to its data as `stream` does and sends that message, with the source's id, in one
write to each browser showing it. What the browser receives is what `source.stream(rows, rollover)` would have
sent (tests/test_feed.py compares them). Python `on_change("data")` callbacks of an attached source do not run for
the feed's rows (it is not a change the session made); JavaScript callbacks in the browser do, as for `stream`.

A feed is one per worker process and name (`Feed.shared`), ticks on the worker's event loop while some attached
source belongs to a live session, and forgets a source once its session is discarded. Define `compute` in a module
of its own (an app's directory is importable: apps/streaming/instrument.py), not in main.py: Bokeh empties a
session's main.py namespace when the session ends, and the feed outlives the session that made it.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from bokeh_stack.config.expect import Expect, unmet
from bokeh_stack.patches import one_write

Rows = dict[str, Sequence[Any]]
# What a Feed reads of Bokeh's server: the session behind a document and the websockets subscribed to it.
EXPECTS = (
    Expect("bokeh.server.contexts:BokehSessionContext._set_session", uses=("_session",)),
    Expect("bokeh.server.session:ServerSession.__init__", uses=("_subscribed_connections",)),
    Expect("bokeh.server.connection:ServerConnection.__init__", uses=("_socket",)),
    Expect("bokeh.server.views.ws:WSHandler.__init__", uses=("write_lock",)),
    Expect("bokeh.core.property.wrappers:PropertyValueColumnData._stream", params=("rollover",), uses=("extend",)),
    Expect("bokeh.protocol.message:Message.buffers"),
    *one_write.WRITE_EXPECTS,
)
_feeds: dict[str, Feed] = {}


class Feed:
    """Rows computed once per tick by `compute()` and streamed to every attached ColumnDataSource, keeping the last
    `rollover` rows (None: all)."""

    def __init__(self, compute: Callable[[], Rows], period_ms: int, rollover: int | None = None) -> None:
        if problems := unmet(EXPECTS):
            raise RuntimeError(f"bokeh_stack.feed does not fit this Bokeh: {'; '.join(problems)}")
        self.compute, self.period_ms, self.rollover = compute, period_ms, rollover
        self._sources: weakref.WeakSet = weakref.WeakSet()
        self._timer = None

    @classmethod
    def shared(cls, name: str, compute: Callable[[], Rows], period_ms: int, rollover: int | None = None) -> Feed:
        """The worker's feed called `name`, made by the first session that asks (an app's code runs once per
        session; the feed, once per worker)."""
        feed = _feeds.get(name)
        if feed is None:
            feed = _feeds[name] = cls(compute, period_ms, rollover)
        return feed

    def attach(self, source) -> None:
        """Show the feed in `source` (a ColumnDataSource of this session's document, holding the feed's columns)."""
        self._sources.add(source)
        if self._timer is None:
            from tornado.ioloop import PeriodicCallback

            self._timer = PeriodicCallback(self.tick, self.period_ms)
            self._timer.start()

    def detach(self, source) -> None:
        self._sources.discard(source)

    def tick(self) -> None:
        """Compute the rows once, serialize them once, append them to every attached source and send them."""
        sources = [s for s in self._sources if s.document is not None]
        if not sources:
            self._timer.stop()
            self._timer = None
            return
        rows = self.compute()
        patch = _Patch.of(rows, self.rollover)
        for source in sources:
            _append(source, rows, self.rollover)
            sockets = _sockets(source.document)
            if sockets:
                frames = patch.frames(source.id)
                for socket in sockets:
                    _send(socket, frames)


class _Patch(NamedTuple):
    """The PATCH-DOC message Bokeh sends for `stream(rows, rollover)`, made once on a scratch source, and the
    scratch source's `"id":"..."` to put each session's source id in."""

    header: str
    metadata: str
    content: str
    buffers: list
    scratch_id: str

    @classmethod
    def of(cls, rows: Rows, rollover: int | None) -> _Patch:
        from bokeh.document import Document
        from bokeh.models import ColumnDataSource
        from bokeh.protocol import Protocol

        doc, scratch = Document(), ColumnDataSource(data={name: [] for name in rows})
        doc.add_root(scratch)
        events: list = []
        doc.on_change(events.append)
        scratch.stream(rows, rollover)
        frames = one_write.message_frames(Protocol().create("PATCH-DOC", events))
        (header, _), (metadata, _), (content, _) = frames[:3]
        return cls(header, metadata, content, frames[3:], f'"id":"{scratch.id}"')

    def frames(self, source_id: str) -> list:
        """The message's frames, (data, binary) each, for the source with id `source_id`."""
        content = self.content.replace(self.scratch_id, f'"id":"{source_id}"', 1)
        return [(self.header, False), (self.metadata, False), (content, False), *self.buffers]


def _append(source, rows: Rows, rollover: int | None) -> None:
    """What `ColumnDataSource.stream` does to the server's copy of the data, without a change event per session."""
    import numpy as np

    data = source.data
    for name, new in rows.items():
        old = data[name]
        if isinstance(old, np.ndarray) or isinstance(new, np.ndarray):
            seq = new if len(old) == 0 else old if len(new) == 0 else np.append(old, new)
            if rollover is not None and len(seq) > rollover:
                seq = seq[len(seq) - rollover :]
            dict.__setitem__(data, name, seq)
        else:
            old.extend(new)
            if rollover is not None:
                del old[:-rollover]


def _sockets(doc) -> list:
    """The websockets (WSHandler) of the browsers showing `doc`'s session."""
    context = doc.session_context
    session = getattr(context, "_session", None)
    if session is None:
        return []
    return [connection._socket for connection in session._subscribed_connections]


def _send(socket, frames) -> None:
    """One write if the websocket's write lock is free (no other message is half written); else once it is."""
    import asyncio

    acquired = socket.write_lock.acquire()
    if acquired.done():
        _write_locked(socket, frames)
    else:
        asyncio.ensure_future(_send_when_free(socket, acquired, frames))


async def _send_when_free(socket, acquired, frames) -> None:
    await acquired
    _write_locked(socket, frames)


def _write_locked(socket, frames) -> None:
    """Write the frames of one message to a websocket whose write lock the caller holds, then release it."""
    from tornado.websocket import WebSocketClosedError

    try:
        one_write.write_frames(socket, frames, new_message=True)
    except WebSocketClosedError:
        pass  # the browser left: its session is discarded later, and the feed forgets the source with it
    finally:
        socket.write_lock.release()
