"""bokeh_stack.feed (a feed computed once per tick per worker, shown by many sessions) and one write per message
(patches/one_write.py): a feed sends what `source.stream` sends and leaves the server's data as `stream` would;
in a real server, every tab gets each reading once, as one message in one write."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tornado.iostream
from bokeh.application import Application
from bokeh.application.handlers.function import FunctionHandler
from bokeh.document import Document
from bokeh.models import ColumnDataSource
from bokeh.protocol import Protocol
from bokeh.server.server import Server

from bokeh_stack import feed as feeds
from bokeh_stack.feed import Feed
from bokeh_stack.patches import fixes, one_write, patching
from harness.pageview import open_page
from harness.stack import free_ports

_ID = re.compile(r'"p\d+"')


def _stream_message(data: dict, rows: dict, rollover: int | None) -> tuple[str, list[bytes], dict]:
    """What Bokeh itself sends for source.stream(rows, rollover), and the data it leaves."""
    doc, source = Document(), ColumnDataSource(data=data)
    doc.add_root(source)
    events: list = []
    doc.on_change(events.append)
    source.stream(rows, rollover)
    message = Protocol().create("PATCH-DOC", events)
    content = message.content_json.replace(f'"id":"{source.id}"', '"id":"SOURCE"')
    return _ID.sub('"id"', content), [bytes(b.data) for b in message.buffers], dict(source.data)


def _copy(data: dict) -> dict:
    return {k: (v.copy() if isinstance(v, np.ndarray) else list(v)) for k, v in data.items()}


@pytest.mark.parametrize(
    "data, rows",
    [
        ({"t": [1.0, 2.0], "c": ["red", "blue"]}, {"t": [3.0], "c": ["green"]}),
        ({"x": np.arange(4.0), "n": np.arange(4)}, {"x": np.array([9.5, 10.5]), "n": np.array([7, 8])}),
        ({"x": [], "y": np.array([])}, {"x": [1, 2], "y": np.array([0.5, 0.25])}),
    ],
)
@pytest.mark.parametrize("rollover", [None, 3])
def test_a_feed_sends_and_keeps_what_stream_does(data, rows, rollover):
    bokeh_content, bokeh_buffers, bokeh_data = _stream_message(_copy(data), rows, rollover)
    (header, _), _, (content, _), *buffers = feeds._Patch.of(rows, rollover).frames("SOURCE")
    assert '"msgtype":"PATCH-DOC"' in header.replace(" ", "")
    assert _ID.sub('"id"', content) == bokeh_content
    assert [payload for payload, binary in buffers if binary] == bokeh_buffers

    source = ColumnDataSource(data=_copy(data))
    feeds._append(source, rows, rollover)
    assert source.data.keys() == bokeh_data.keys()
    for name, values in bokeh_data.items():
        assert type(source.data[name]) is type(values) and np.array_equal(source.data[name], values), name


def test_a_feed_fits_the_pinned_bokeh_and_tornado():
    from bokeh_stack.config.expect import unmet

    assert unmet(feeds.EXPECTS) == []
    assert fixes.check(one_write.FIXES) == {}


class Writes:
    """Counts the writes of the server's sockets (tornado IOStream.write), per stream."""

    def __init__(self, monkeypatch) -> None:
        self.count = 0
        write = tornado.iostream.BaseIOStream.write

        def counted(stream, data, *args, **kwargs):
            if isinstance(stream, tornado.iostream.IOStream) and getattr(stream, "_bokeh_stack_server", False):
                self.count += 1
            return write(stream, data, *args, **kwargs)

        monkeypatch.setattr(tornado.iostream.BaseIOStream, "write", counted)


def test_every_tab_gets_each_reading_once_in_one_write(monkeypatch):
    readings = []

    def read() -> dict:
        readings.append(len(readings))
        return {"reading": [len(readings) - 1]}

    feed = Feed(read, period_ms=50, rollover=5)

    def page(doc) -> None:
        source = ColumnDataSource(data={"reading": []})
        doc.add_root(source)
        feed.attach(source)

    fixes.apply(fixes.FIXES)  # the worker's fixes: one write per message, and the open websockets tracked
    writes = Writes(monkeypatch)
    port = free_ports(1)
    server = Server(
        {"/feed": Application(FunctionHandler(page))},
        port=port,
        address="127.0.0.1",
        allow_websocket_origin=[f"127.0.0.1:{port}"],
    )

    async def two_tabs() -> tuple[list[list[int]], int, int]:
        server.start()
        tabs = [await open_page(f"http://127.0.0.1:{port}/feed") for _ in range(2)]
        for handler in (h for h in fixes.open_websockets() if h.ws_connection):
            handler.ws_connection.stream._bokeh_stack_server = True
        seen: list[list[int]] = [[], []]
        before, ticks_before = writes.count, len(readings)
        for _ in range(8):
            for i, tab in enumerate(tabs):
                message = await tab.next_message(timeout=5)
                seen[i] += dict(message.content["events"][0]["data"]["entries"])["reading"]
        sent, ticks = writes.count - before, len(readings) - ticks_before
        for tab in tabs:
            tab.close()
        return seen, sent, ticks

    try:
        seen, sent, ticks = server.io_loop.asyncio_loop.run_until_complete(two_tabs())
    finally:
        server.stop()
        server.unlisten()
        patching.undo()
    for readings_shown in seen:  # each tab sees every reading once, in order: computed once per tick, not per tab
        assert readings_shown == list(range(readings_shown[0], readings_shown[0] + 8)), seen
    assert len(set(seen[0]) & set(seen[1])) >= 6, f"the tabs show different readings: {seen}"
    assert sent <= 2 * ticks + 2, f"{sent} writes for {ticks} ticks to 2 tabs: each message in one write"


@pytest.mark.parametrize("compression", [False, True])
def test_compression_is_offered_only_when_set(compression):
    """settings session.compression: the worker offers permessage-deflate (the worker's --compression applies
    one_write.COMPRESSION); a browser offering it gets compressed frames only then."""
    from bokeh.models import Div

    if compression:
        fixes.apply(one_write.COMPRESSION)
    port = free_ports(1)
    app = Application(FunctionHandler(lambda doc: doc.add_root(Div(text="x" * 5000))))
    server = Server({"/app": app}, port=port, address="127.0.0.1", allow_websocket_origin=[f"127.0.0.1:{port}"])

    async def open_one() -> tuple[bool, int]:
        server.start()
        view = await open_page(f"http://127.0.0.1:{port}/app", compression=True)
        try:
            return view._ws.protocol._compressor is not None, view.wire_bytes
        finally:
            view.close()

    try:
        negotiated, wire = server.io_loop.asyncio_loop.run_until_complete(open_one())
    finally:
        server.stop()
        server.unlisten()
        patching.undo()
    assert negotiated == compression
    assert (wire < 5000) == compression, f"{wire} bytes on the wire for a 5,000-character document"
