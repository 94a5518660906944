"""Bring a running stack in line with its settings without dropping users.

Render (only once nginx accepts the candidate), then apply what changed: nginx reloads gracefully (HUP) for a
new nginx config; a pool whose worker arguments changed restarts one worker at a time, each back and answering
its probe before the next goes down, while nginx sends new page views to the others. Only a change in a pool's
ports or worker count restarts that pool's program at once (supervisord cannot renumber a running program).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bokeh_stack.config import topology
from bokeh_stack.config.plan import RunPlan
from bokeh_stack.config.pools import Pool
from bokeh_stack.config.topology import NGINX, OPS, POOLS, SIGNIN
from bokeh_stack.provisioning import privileges, supervision
from bokeh_stack.provisioning.render import render_checked

READY_TIMEOUT_S = 60


class ApplyError(RuntimeError):
    pass


@dataclass
class Applied:
    changed_files: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    running: bool = False


def apply(plan: RunPlan, restart_all: bool = False, log: Callable[[str], None] = print) -> Applied:
    before = {pool.program: _read(plan.args_file(pool)) for pool in plan.settings.pools}
    privileges.check(plan, log)
    changed = set(render_checked(plan))
    result = Applied(changed_files=sorted(str(p) for p in changed))
    if supervision.supervisord_running(plan.socket) is None:
        return result
    result.running = True
    sup = supervision.rpc(plan.socket).supervisor

    def act(message: str) -> None:
        result.actions.append(message)
        log(f"bokeh-stack: {message}")

    replaced: set[str] = set()
    removed: list[str] = []
    if plan.supervisord_conf in changed:
        [[added, modified, removed]] = sup.reloadConfig()
        for group in modified:
            sup.stopProcessGroup(group)
            sup.removeProcessGroup(group)
            sup.addProcessGroup(group)
            replaced.add(group)
            act(f"restarted {group}: its program changed (its ports, worker count or command)")
        for group in added:
            sup.addProcessGroup(group)
            replaced.add(group)
            act(f"started {group}")

    if plan.with_signin and plan.signin_file in changed and SIGNIN not in replaced:
        sup.signalProcess(SIGNIN, "HUP")
        act("the sign-in process read its new settings")
    if plan.with_signin and SIGNIN in replaced:
        # nginx asks it about every page once reloaded: it must listen first.
        wait_for_socket(plan.signin_socket, READY_TIMEOUT_S, "the sign-in process")

    nginx_confs = {plan.nginx_conf, plan.nginx_site_conf, *(plan.pool_members(p) for p in plan.settings.pools)}
    if plan.with_nginx and changed & nginx_confs and NGINX not in replaced:
        sup.signalProcess(NGINX, "HUP")
        act("reloaded nginx")
    for group in removed:  # once nginx no longer sends anything there
        sup.stopProcessGroup(group)
        sup.removeProcessGroup(group)
        act(f"removed {group}")

    if plan.with_nginx and plan.ops_file in changed and OPS not in replaced:
        sup.stopProcess(OPS)
        sup.startProcess(OPS)
        act("restarted the ops process with the new workers to scrape")
    managed = {pool.program for pool in plan.settings.pools if pool.managed}
    if plan.with_pools and POOLS not in replaced and (plan.pools_file in changed or managed & replaced):
        # It starts the workers of a pool whose program was replaced (theirs do not start by themselves).
        sup.stopProcess(POOLS)
        sup.startProcess(POOLS)
        act("restarted the pools program with the new pools")

    if plan.with_workers:
        for pool in plan.settings.pools:
            args_changed = plan.args_file(pool) in changed
            if pool.program not in replaced and (restart_all or args_changed):
                why = _why(before[pool.program], _read(plan.args_file(pool))) if args_changed else "reload"
                rolling_restart(plan, pool, act, why)
    return result


def wait_for_socket(path, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        with socket.socket(socket.AF_UNIX) as s:
            try:
                s.connect(str(path))
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise ApplyError(f"{what} did not listen on {path} within {timeout_s} s") from None
        time.sleep(0.1)


def _read(path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _why(old: str, new: str) -> str:
    """Why a pool's worker arguments changed: bokeh-stack or Bokeh (the `# bokeh-stack` line), which apps' code
    (the `# app NAME DIGEST` lines), its settings."""
    old_lines, new_lines = set(old.splitlines()), set(new.splitlines())
    changed = old_lines ^ new_lines
    reasons = ["bokeh-stack or Bokeh changed"] if any(line.startswith("# bokeh-stack ") for line in changed) else []
    apps = sorted({line.split()[2] for line in changed if line.startswith("# app ")})
    reasons += [f"app code changed: {', '.join(apps)}"] if apps else []
    if any(not line.startswith("# ") for line in changed):
        reasons.append("worker settings changed")
    return "; ".join(reasons)


def rolling_restart(plan: RunPlan, pool: Pool, act: Callable[[str], None], why: str) -> None:
    """Restart a pool's workers one at a time; each must answer its probe before the next one stops. Of a pool
    that changes as it runs, those running now."""
    sup = supervision.rpc(plan.socket).supervisor
    s = plan.settings
    running = {w.port for w in supervision.workers(plan) if w.pool == pool.name}
    for port in [p for p in pool.ports if p in running] if pool.managed else pool.ports:
        process = topology.worker_process(pool.program, port)
        sup.stopProcess(f"{pool.program}:{process}")
        sup.startProcess(f"{pool.program}:{process}", False)  # not waiting for RUNNING: the probe says when it serves
        deadline = time.monotonic() + READY_TIMEOUT_S
        worker = topology.worker_endpoint(plan, port)
        while worker.probe(s.prefix) is None:
            if time.monotonic() > deadline:
                raise ApplyError(f"{process} did not answer within {READY_TIMEOUT_S} s after its restart")
            time.sleep(0.1)
        act(f"restarted {process} ({why})")
