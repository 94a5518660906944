"""A bokeh-stack worker: `python -m bokeh_stack.worker ARGS_FILE PORT` runs `bokeh` with the arguments in ARGS_FILE
(one per line, rendered from supervisor/worker.args.j2; {port} replaced by PORT), with the stack's worker-side
fixes applied first. Each fix is small, uses only public tornado API, and says why it is here."""

from __future__ import annotations

import logging
import sys

log = logging.getLogger("bokeh_stack.worker")


def websocket_nodelay() -> None:
    """Send every websocket frame at once (TCP_NODELAY), as tornado advises for websockets.

    A Bokeh message is several frames (header, metadata, content, buffers). Without TCP_NODELAY, Nagle's algorithm
    holds the second frame until the first is acknowledged, and a proxy in front (nginx) delays that ACK by up to
    40 ms: every document pull and streamed update through nginx then arrives ~40 ms late.
    """
    from bokeh.server.views.ws import WSHandler

    open_connection = WSHandler.open

    def open_with_nodelay(self: WSHandler) -> None:
        self.set_nodelay(True)
        return open_connection(self)

    WSHandler.open = open_with_nodelay


def read_args(args_file: str, port: str) -> list[str]:
    with open(args_file) as f:
        return [line.replace("{port}", port) for line in f.read().splitlines() if line]


def main(argv: list[str]) -> None:
    if len(argv) != 2 or not argv[1].isdigit():
        sys.exit("usage: python -m bokeh_stack.worker ARGS_FILE PORT")
    args = read_args(*argv)
    websocket_nodelay()
    from bokeh.command.bootstrap import main as bokeh_main

    bokeh_main(["bokeh", *args])


if __name__ == "__main__":
    main(sys.argv[1:])
