"""`bokeh-stack logs [-f] [-n N] [NAME]`: the stack's log files, each line prefixed with whose it is."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

from bokeh_stack.config import topology
from bokeh_stack.config.plan import RunPlan

FOLLOW_INTERVAL_S = 0.25


class LogsError(RuntimeError):
    pass


def log_files(plan: RunPlan, name: str | None = None) -> dict[str, Path]:
    """name -> log file: every one (no name), nginx's (nginx), one worker's (bokeh_default_5100, or its port)."""
    if plan.settings.log_to_stdout:
        raise LogsError("this stack logs to its standard output (log_to_stdout): in containers, docker compose logs")
    found = {path.stem: path for path in sorted(plan.log_dir.glob("*.log"))}
    if name is None:
        return found
    if name == "nginx":
        chosen = {n: p for n, p in found.items() if n.startswith("nginx")}
    else:
        workers = {topology.worker_process(pool.program, port) for pool in plan.settings.pools for port in pool.ports}
        port = int(name) if name.isdigit() else None
        chosen = {n: p for n, p in found.items() if n == name or n in workers and topology.worker_port(n) == port}
    if not chosen:
        names = ", ".join(["nginx", *(n for n in found if not n.startswith("nginx"))])
        raise LogsError(f"no log of {name!r} in {plan.log_dir} (there are: {names})")
    return chosen


def show(files: dict[str, Path], lines: int, follow: bool, out=sys.stdout) -> None:
    """The last `lines` lines of each file; with follow, then every line written after, until interrupted."""
    width = max(len(name) for name in files)
    positions: dict[str, int] = {}
    for name, path in files.items():
        data = path.read_bytes()
        for line in data.decode(errors="replace").splitlines()[-lines:] if lines else []:
            out.write(f"{name:<{width}} | {line}\n")
        positions[name] = len(data)
    out.flush()
    if not follow:
        return
    stop = []
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.append(True))
    while not stop:
        for name, path in files.items():
            try:
                size = path.stat().st_size
            except OSError:
                continue  # being rotated
            if size < positions[name]:  # rotated: the new file starts from nothing
                positions[name] = 0
            if size > positions[name]:
                with open(path, "rb") as f:
                    f.seek(positions[name])
                    data = f.read()
                # Only whole lines; the rest waits for its newline.
                whole = data[: data.rfind(b"\n") + 1]
                positions[name] += len(whole)
                for line in whole.decode(errors="replace").splitlines():
                    out.write(f"{name:<{width}} | {line}\n")
                out.flush()
        time.sleep(FOLLOW_INTERVAL_S)
