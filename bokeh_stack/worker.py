"""A bokeh-stack worker: `python -m bokeh_stack.worker [--plain | --warn-mismatch] ARGS_FILE PORT` runs `bokeh`
with the arguments in ARGS_FILE (one per line, rendered from supervisor/worker.args.j2; {port} replaced by PORT),
with the stack's fixes to Bokeh (bokeh_stack/fixes.py) checked and applied first."""

from __future__ import annotations

import sys

from . import fixes

USAGE = "usage: python -m bokeh_stack.worker [--plain | --warn-mismatch] ARGS_FILE PORT"


def read_args(args_file: str, port: str) -> list[str]:
    with open(args_file) as f:
        return [line.replace("{port}", port) for line in f.read().splitlines() if line and not line.startswith("#")]


def main(argv: list[str]) -> None:
    mode = argv[0] if argv[:1] in (["--plain"], ["--warn-mismatch"]) else ""
    argv = argv[1:] if mode else argv
    if len(argv) != 2 or not argv[1].isdigit():
        sys.exit(USAGE)
    args = read_args(*argv)
    # --plain (setting worker_fixes: false) runs Bokeh as it is, to tell its behaviour from ours.
    if mode != "--plain":
        try:
            fixes.apply(on_mismatch="warn" if mode else "stop")
        except fixes.FixTargetChanged as e:
            sys.exit(f"bokeh-stack worker: {e}")
    from bokeh.command.bootstrap import main as bokeh_main

    bokeh_main(["bokeh", *args])


if __name__ == "__main__":
    main(sys.argv[1:])
