"""Start and stop an embedded Bokeh server again and again in one process, as a notebook does that runs a server
per cell: `python -m tests.embed_cycles fixed|plain CYCLES` prints, after each cycle, what the process still holds
(JSON lines). Each cycle serves examples/embedded_server.py's streaming make_document (counting the sessions
whose on_session_destroyed ran): 3 tabs streaming (one closed before the stop, two left open), 2 page GETs
without a websocket, then the server's stop()."""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import threading

import psutil
from bokeh.server.session import ServerSession
from tornado.httpclient import AsyncHTTPClient

from examples.embedded_server import make_document
from harness.pageview import open_page


def server_class(kind: str):
    if kind == "fixed":
        from bokeh_stack.embed import Server
    else:
        from bokeh.server.server import Server
    return Server


destroyed = 0  # sessions whose on_session_destroyed callback ran


def make_counted_document(doc) -> None:
    def count(session_context) -> None:
        global destroyed
        destroyed += 1

    make_document(doc)
    doc.on_session_destroyed(count)


async def cycle(server_type) -> None:
    server = server_type({"/": make_counted_document}, port=0, address="127.0.0.1", allow_websocket_origin=["*"])
    server.start()
    url = f"http://127.0.0.1:{server.port}/"
    tabs = [await open_page(url, document_ready=True) for _ in range(3)]
    await tabs[0].next_message()  # streaming
    tabs[0].close()
    for _ in range(2):
        await AsyncHTTPClient().fetch(url)
    server.stop()
    await asyncio.sleep(0.5)  # the closes and the connections' ends go through
    for tab in tabs[1:]:
        tab.close()
    await asyncio.sleep(0.2)


def held() -> dict[str, int]:
    gc.collect()
    process = psutil.Process()
    return {
        "destroyed": destroyed,
        "sessions": sum(1 for o in gc.get_objects() if isinstance(o, ServerSession) and not o.destroyed),
        # call_later handles (periodic callbacks among them) not cancelled
        "timers": sum(1 for h in asyncio.get_running_loop()._scheduled if not h.cancelled()),
        "threads": threading.active_count(),
        "fds": process.num_fds(),
        "rss": process.memory_info().rss,
    }


async def main(kind: str, cycles: int) -> None:
    server_type = server_class(kind)
    for n in range(cycles):
        await cycle(server_type)
        print(json.dumps({"cycle": n + 1, **held()}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
