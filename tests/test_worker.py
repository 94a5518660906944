"""The worker-side fixes bokeh_stack.worker applies before `bokeh serve` starts."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys

from bokeh.application import Application
from bokeh.application.handlers.function import FunctionHandler
from bokeh.models import Div
from bokeh.server.server import Server

from bokeh_stack import worker
from bokeh_stack.pageview import open_page

from .stack import free_ports


def test_websocket_frames_are_sent_without_nagle_delay():
    worker.websocket_nodelay()
    port = free_ports(1)
    app = Application(FunctionHandler(lambda doc: doc.add_root(Div(text="hi"))))
    server = Server({"/app": app}, port=port, address="127.0.0.1", allow_websocket_origin=[f"127.0.0.1:{port}"])

    async def connect_and_look() -> list[int]:
        server.start()
        view = await open_page(f"http://127.0.0.1:{port}/app")
        try:
            handlers = [connection._socket for connection in server._tornado._clients]
            return [h.ws_connection.stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for h in handlers]
        finally:
            view.close()

    try:
        flags = server.io_loop.asyncio_loop.run_until_complete(connect_and_look())
    finally:
        server.stop()
        server.unlisten()
    assert flags and all(flags), "the worker's websocket socket lacks TCP_NODELAY"


def test_discarded_sessions_share_one_deferred_collection():
    import asyncio
    import gc

    collector = worker.CoalescedCollector(delay_s=0.05)
    assert collector.collect() > -1  # outside an event loop: an immediate, ordinary collection

    async def discard_a_batch() -> tuple[int, int]:
        before = gc.get_stats()[2]["collections"]
        for _ in range(50):
            collector.collect()  # what Document.destroy calls, once per discarded session
        during = gc.get_stats()[2]["collections"] - before
        await asyncio.sleep(0.2)
        return during, gc.get_stats()[2]["collections"] - before

    gc.disable()  # only the collections asked for are counted
    try:
        during, after = asyncio.run(discard_a_batch())
    finally:
        gc.enable()
    assert during == 0, "a collection ran inside the batch"
    assert after == 1, f"{after} full collections for one batch of 50 discards"


PATCHES = """
import json, sys
from bokeh.document import Document
from bokeh.models import ColumnDataSource, Title
from bokeh.plotting import figure
from bokeh.protocol import Protocol
from bokeh_stack import worker

doc = Document()
source = ColumnDataSource(data={"x": [1.0], "y": [2.0]})
plot = figure()
plot.line("x", "y", source=source)
doc.add_root(plot)
doc.models.flush_synced()  # the client has the document
events = []
doc.on_change(lambda event: events.append(event))
source.stream({"x": [3.0], "y": [4.0]})
plot.title = Title(text="new")  # a model the client has not seen: it must go in full, not as a reference
if sys.argv[1] == "fixed":
    worker.references_on_demand()
print(json.dumps([json.loads(Protocol().create("PATCH-DOC", [e]).content_json) for e in events]))
"""


def test_patches_serialized_with_references_on_demand_say_the_same():
    plain, fixed = (
        json.loads(subprocess.run([sys.executable, "-c", PATCHES, mode], capture_output=True, check=True).stdout)
        for mode in ("plain", "fixed")
    )
    assert "new" in json.dumps(fixed[1]), "the new Title was sent as a bare reference"

    def ids_masked(value):
        return json.loads(re.sub(r'"p\d+"', '"p"', json.dumps(value)))

    assert ids_masked(fixed) == ids_masked(plain)
