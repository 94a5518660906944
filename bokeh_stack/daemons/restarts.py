"""How often supervisord restarted each worker on its own, after it exited (a crash, an out-of-memory kill,
kill -9): a supervisord event listener, `python -m bokeh_stack.daemons.restarts FILE`, counts them into FILE (JSON,
config/handoff.py), which `bokeh-stack status` and each worker's metrics read. Restarts asked for over
supervisord's API (apply's rolling restarts, `bokeh-stack reload`, the watchdog's restart of a hung worker: see its
log) are not counted. The counts belong to one supervisord run: a new supervisord starts them from zero."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from bokeh_stack.config.handoff import Restarts

# A process goes STARTING from one of these when supervisord restarts it on its own.
UNPLANNED_FROM = {"EXITED", "BACKOFF"}


def main(argv: list[str]) -> int:
    from supervisor.childutils import get_headers, listener

    if len(argv) != 1:
        print("usage: python -m bokeh_stack.daemons.restarts FILE (as a supervisord eventlistener)", file=sys.stderr)
        return 2
    path, supervisord_pid = Path(argv[0]), os.getppid()
    kept = Restarts.read(path)
    restarts = Restarts(supervisord_pid, kept.counts if kept and kept.supervisord_pid == supervisord_pid else {})
    restarts.write(path)
    while True:
        headers, payload = listener.wait(sys.stdin, sys.stdout)
        if headers.get("eventname") == "PROCESS_STATE_STARTING":
            event = get_headers(payload)
            if event.get("from_state") in UNPLANNED_FROM:
                name = event["processname"]
                restarts.counts[name] = restarts.counts.get(name, 0) + 1
                restarts.write(path)
        listener.ok(sys.stdout)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
