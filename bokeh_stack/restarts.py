"""How often supervisord restarted each worker on its own, after it exited (a crash, an out-of-memory kill,
kill -9): a supervisord event listener, `python -m bokeh_stack.restarts FILE`, counts them into FILE (JSON), which
`bokeh-stack status` and each worker's metrics read. Restarts asked for over supervisord's API (apply's rolling
restarts, `bokeh-stack reload`, the watchdog's restart of a hung worker: see its log) are not counted. The counts
belong to one supervisord run: a new supervisord starts them from zero."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from .files import write_atomically

# A process goes STARTING from one of these when supervisord restarts it on its own.
UNPLANNED_FROM = {"EXITED", "BACKOFF"}


def counts(path: Path) -> dict[str, int]:
    """Process name -> restarts, from the file the listener keeps ({} if there is none yet)."""
    try:
        data = json.loads(Path(path).read_text())
        return {str(name): int(n) for name, n in data.get("counts", {}).items()}
    except (OSError, ValueError, AttributeError, TypeError):
        return {}


def _write(path: Path, supervisord_pid: int, restarts: dict[str, int]) -> None:
    # Read by the workers (their restart counter), under supervisord's umask 027.
    write_atomically(
        path, json.dumps({"supervisord_pid": supervisord_pid, "counts": restarts}, sort_keys=True), mode=0o644
    )


def main(argv: list[str]) -> int:
    from supervisor.childutils import get_headers, listener

    if len(argv) != 1:
        print("usage: python -m bokeh_stack.restarts FILE (as a supervisord eventlistener)", file=sys.stderr)
        return 2
    path, supervisord_pid = Path(argv[0]), os.getppid()
    try:
        kept = json.loads(path.read_text())
    except (OSError, ValueError):
        kept = None
    same_run = isinstance(kept, dict) and kept.get("supervisord_pid") == supervisord_pid
    restarts = counts(path) if same_run else {}
    _write(path, supervisord_pid, restarts)
    while True:
        headers, payload = listener.wait(sys.stdin, sys.stdout)
        if headers.get("eventname") == "PROCESS_STATE_STARTING":
            event = get_headers(payload)
            if event.get("from_state") in UNPLANNED_FROM:
                name = event["processname"]
                restarts[name] = restarts.get(name, 0) + 1
                _write(path, supervisord_pid, restarts)
        listener.ok(sys.stdout)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
