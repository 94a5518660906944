"""A program that embeds its own Bokeh server, with bokeh-stack's fixes: a streaming plot built by make_document.

    python examples/embedded_server.py [--port 5006] [--address 127.0.0.1]

then open http://127.0.0.1:5006/. The only change from Bokeh's own embedding example is the import of Server:
`from bokeh_stack.embed import Server` instead of `from bokeh.server.server import Server`.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from bokeh.events import DocumentReady
from bokeh.models import ColumnDataSource
from bokeh.plotting import figure

from bokeh_stack.embed import Server

PERIOD_MS, KEEP = 100, 600


def make_document(doc) -> None:
    """One session's document: a random walk, one point every PERIOD_MS, the last KEEP points shown."""
    rng = np.random.default_rng()
    source = ColumnDataSource({"t": [], "value": []})
    plot = figure(title="Embedded stream", x_axis_type="datetime", height=300, sizing_mode="stretch_width")
    plot.line("t", "value", source=source)

    def update() -> None:
        last = source.data["value"][-1] if source.data["value"] else 0.0
        source.stream({"t": [time.time() * 1000], "value": [last + rng.standard_normal()]}, rollover=KEEP)

    def start(event: DocumentReady) -> None:
        # Stream only once a browser shows the page: a page fetched without its websocket (a crawler, a link
        # preview) builds a session too, and should cost nothing until it is discarded.
        if not doc.session_callbacks:
            doc.add_periodic_callback(update, PERIOD_MS)

    doc.on_event(DocumentReady, start)
    doc.add_root(plot)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=5006)
    parser.add_argument("--address", default="127.0.0.1")
    args = parser.parse_args()
    server = Server(
        {"/": make_document},
        port=args.port,
        address=args.address,
        allow_websocket_origin=[f"{args.address}:{args.port}", f"localhost:{args.port}"],
    )
    print(f"serving http://{args.address}:{args.port}/", flush=True)
    server.run_until_shutdown()  # Ctrl-C or SIGTERM: open tabs are closed cleanly, then it exits


if __name__ == "__main__":
    main()
