"""A bokeh-stack worker: `python -m bokeh_stack.worker [--plain | --warn-mismatch] [--no-metrics] ARGS_FILE PORT`
runs `bokeh` with the arguments in ARGS_FILE (one per line, rendered from supervisor/worker.args.j2; {port}
replaced by PORT), with the stack's fixes to Bokeh (bokeh_stack/fixes.py, bokeh_stack/hardening.py) and its metrics
(bokeh_stack/worker_metrics.py) checked and applied first."""

from __future__ import annotations

import sys
from typing import Any

from . import fixes

# The line a worker logs once it listens (Bokeh names its URLs only on a TCP port): the tests read it.
LISTENING = "bokeh-stack worker listening on"
USAGE = "usage: python -m bokeh_stack.worker [--plain | --warn-mismatch] [--no-metrics] ARGS_FILE PORT"
FLAGS = ("--plain", "--warn-mismatch", "--no-metrics")


def read_args(args_file: str, port: str) -> list[str]:
    with open(args_file) as f:
        return [line.replace("{port}", port) for line in f.read().splitlines() if line and not line.startswith("#")]


def log_where_it_listens() -> None:
    """One log line, on a unix socket as on a TCP port, once the server listens: through Serve.customize_server,
    the hook Bokeh's serve command offers for its Server."""
    import logging

    from bokeh.command.subcommands.serve import Serve

    original = Serve.customize_server

    def customize_server(self: Serve, server: Any) -> Any:
        where = f"{server.address or '*'}:{server.port}" if server.port else f"unix socket {server.unix_socket}"
        logging.getLogger("bokeh.server.server").info("%s %s", LISTENING, where)  # Bokeh's level: INFO
        return original(self, server)

    Serve.customize_server = customize_server  # type: ignore[method-assign]


def main(argv: list[str]) -> None:
    flags = set()
    while argv and argv[0] in FLAGS:
        flags.add(argv.pop(0))
    if len(argv) != 2 or not argv[1].isdigit() or {"--plain", "--warn-mismatch"} <= flags:
        sys.exit(USAGE)
    args = read_args(*argv)
    chosen: tuple[fixes.Fix, ...] = ()
    # --plain (setting worker_fixes: false) runs Bokeh as it is, to tell its behaviour from ours; the metrics only
    # count (setting ops.metrics: false leaves them out, to measure what they cost).
    if "--plain" not in flags:
        from . import hardening

        chosen += fixes.FIXES + hardening.FIXES
    if "--no-metrics" not in flags:
        from . import worker_metrics

        chosen += worker_metrics.FIXES
    try:
        fixes.apply(chosen, on_mismatch="warn" if "--warn-mismatch" in flags else "stop")
    except fixes.FixTargetChanged as e:
        sys.exit(f"bokeh-stack worker: {e}")
    log_where_it_listens()
    from bokeh.command.bootstrap import main as bokeh_main

    bokeh_main(["bokeh", *args])


if __name__ == "__main__":
    main(sys.argv[1:])
