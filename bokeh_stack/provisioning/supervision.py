"""Talk to the stack's supervisord and probe its workers."""

from __future__ import annotations

import os
import subprocess
import time
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path

from bokeh_stack.config import topology
from bokeh_stack.config.plan import RunPlan
from bokeh_stack.config.secret import ENV_VAR, ensure_secret
from bokeh_stack.config.topology import supervisor_rpc as rpc


@dataclass(frozen=True)
class Worker:
    name: str
    pool: str
    port: int
    state: str
    pid: int
    uptime_s: int
    probe_ok: bool
    probe_ms: float | None


def supervisord_running(socket: Path) -> int | None:
    """The pid of the supervisord answering on this socket, or None."""
    if not socket.exists():
        return None
    try:
        return rpc(socket).supervisor.getPID()
    except (OSError, xmlrpc.client.Fault):
        return None


# supervisord's, so its logs and what its processes write are for root and the stack's group only (logs hold what
# clients sent). supervisord sets its `umask` setting only when it goes to the background: its starters set it too.
UMASK = 0o027


def supervisord_command(
    plan: RunPlan, foreground: bool = True, silent: bool = False
) -> tuple[list[str], dict[str, str]]:
    """How to start the stack's supervisord: its command line, and its environment with the checked secret (the
    workers' BOKEH_SECRET_KEY; generated on first start). The one way every starter starts it: `bokeh-stack up`,
    `bokeh-stack supervisord` (containers, Salt, the systemd unit)."""
    env = dict(os.environ)
    if plan.with_workers:
        env[ENV_VAR] = ensure_secret(plan.secret_file)
    argv = [plan.python, "-m", "supervisor.supervisord", "-c", str(plan.supervisord_conf)]
    if foreground:  # silent: its log only in its log file, not also on stdout
        argv += ["--nodaemon"] + (["--silent"] if silent else [])
    return argv, env


def start_supervisord(
    plan: RunPlan, foreground: bool = True, silent: bool = False, validate_documents: bool = False
) -> subprocess.Popen:
    """supervisord as a child in its own process group (in the background: the child exits once it is there).
    validate_documents (`up --dev`): the workers run Bokeh's checks of every document they build, which production
    workers leave to `bokeh-stack check` (patches/page_cost.py)."""
    argv, env = supervisord_command(plan, foreground, silent)
    if validate_documents:
        env = {**env, topology.VALIDATE_DOCUMENTS: "true"}
    return subprocess.Popen(argv, env=env, start_new_session=True, umask=UMASK)


def shutdown(plan: RunPlan, timeout_s: float = 60) -> int | None:
    """Stop the stack running from this plan's runtime dir (supervisord stops every worker and nginx, then exits);
    returns the pid that ran it, or None if nothing ran. Raises TimeoutError if it is still there after timeout_s."""
    pid = supervisord_running(plan.socket)
    if pid is None:
        return None
    try:
        rpc(plan.socket).supervisor.shutdown()
    except (OSError, xmlrpc.client.Fault):
        pass  # already on its way out
    deadline = time.monotonic() + timeout_s
    while _alive(pid):
        if time.monotonic() > deadline:
            raise TimeoutError(f"supervisord (pid {pid}) still runs {timeout_s:.0f} s after shutdown")
        time.sleep(0.1)
    return pid


def _alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (a zombie has stopped; only its parent can reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def workers(plan: RunPlan) -> list[Worker]:
    """Every worker process of the stack, as supervisord sees it, with a probe of each; not the places a pool that
    changes as it runs keeps for workers it does not run now."""
    s = plan.settings
    pools = {pool.program: pool for pool in s.pools}
    found = []
    for info in rpc(plan.socket).supervisor.getAllProcessInfo():
        pool = pools.get(info["group"])
        if pool is None or (pool.managed and info["statename"] == "STOPPED"):
            continue
        port = topology.worker_port(info["name"])
        running = info["statename"] in ("STARTING", "RUNNING")  # STARTING: up for less than startsecs
        seconds = topology.worker_endpoint(plan, port).probe(s.prefix) if running else None
        found.append(
            Worker(
                name=info["name"],
                pool=pool.name,
                port=port,
                # supervisord says STARTING until startsecs (watchdog.start_grace_s) have passed; a worker that
                # answers serves, so it is RUNNING to anyone who asks.
                state="RUNNING" if running and seconds is not None else info["statename"],
                pid=info["pid"],
                uptime_s=(info["now"] - info["start"]) if running else 0,
                probe_ok=seconds is not None,
                probe_ms=None if seconds is None else seconds * 1000,
            )
        )
    return found


def services(plan: RunPlan) -> dict[str, tuple[str, int]]:
    """The stack's other processes (nginx, the ops process, the listeners): name -> (state, pid)."""
    pools = {pool.program for pool in plan.settings.pools}
    return {
        info["name"]: (info["statename"], info["pid"])
        for info in rpc(plan.socket).supervisor.getAllProcessInfo()
        if info["group"] not in pools
    }


def log_tail(plan: RunPlan, process_name: str, lines: int = 20) -> str:
    path = plan.process_log(process_name)
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
