"""`bokeh-stack status`: every worker of this host as supervisord sees it, with what its own metrics say
(sessions, websockets, memory, document build time) and how often it was restarted; a table, JSON or a live view."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from bokeh_stack.config import topology
from bokeh_stack.config.handoff import read_pools_state, restart_counts
from bokeh_stack.config.limits import RESUME_OUTCOMES
from bokeh_stack.config.plan import RunPlan
from bokeh_stack.provisioning import runner, supervision

WATCH_INTERVAL_S = 2.0


@dataclass(frozen=True)
class WorkerStatus:
    name: str
    pool: str
    worker: str
    port: int
    socket: str | None
    state: str
    pid: int
    uptime_s: int
    probe_ms: float | None
    connected: int | None
    unconnected: int | None
    websockets: int | None
    rss_bytes: float | None
    build_p95_s: float | None
    loop_lag_s: float | None
    restarts: int
    resumes: dict[str, int] | None  # tabs that reconnected here, by outcome: resumed, fresh, failed


def gather(plan: RunPlan) -> dict[str, Any]:
    """Everything status shows, as the --json output holds it."""
    from bokeh_stack.daemons import fleet  # prometheus_client's parser: only for this command

    s = plan.settings
    workers = supervision.workers(plan)
    targets = {(pool.name, port): t for pool in s.pools for port, t in topology.local_targets(plan, pool)}
    found = asyncio.run(fleet.scrape(targets.values(), topology.route("worker_metrics", s.prefix)))
    metrics = {w.worker: w for w in fleet.summarize(found)}
    counts = restart_counts(plan.restarts_file)
    rows = []
    for w in workers:
        target = targets[w.pool, w.port]
        m = metrics.get(target.worker)
        up = m is not None and m.up
        rows.append(
            WorkerStatus(
                name=w.name,
                pool=w.pool,
                worker=target.worker,
                port=w.port,
                socket=target.socket or None,
                state=w.state,
                pid=w.pid,
                uptime_s=w.uptime_s,
                probe_ms=w.probe_ms,
                connected=m.connected if up else None,
                unconnected=m.unconnected if up else None,
                websockets=m.websockets if up else None,
                rss_bytes=m.rss_bytes if up else None,
                build_p95_s=m.build_p95_s if up else None,
                loop_lag_s=m.loop_lag_s if up else None,
                restarts=counts.get(w.name, 0),
                resumes=m.resumes if up else None,
            )
        )
    totals = {
        "workers": len(rows),
        "running": sum(r.state == "RUNNING" for r in rows),
        **{key: sum(getattr(r, key) or 0 for r in rows) for key in ("connected", "unconnected", "websockets")},
        "rss_bytes": sum(r.rss_bytes or 0 for r in rows),
        "restarts": sum(r.restarts for r in rows),
        "resumes": {o: sum((r.resumes or {}).get(o, 0) for r in rows) for o in RESUME_OUTCOMES},
    }
    services = {name: {"state": state, "pid": pid} for name, (state, pid) in supervision.services(plan).items()}
    supervisord_pid = supervision.supervisord_running(plan.socket)
    result = {
        "supervisord_pid": supervisord_pid,
        "supervisord_conf": str(plan.supervisord_conf),
        "workers": [asdict(r) for r in rows],
        "totals": totals,
        "pools": pools(plan, rows, supervisord_pid or 0),
        "services": services,
    }
    if plan.with_nginx:
        result["ops"] = runner.ops_url(plan.settings)
    return result


def pools(plan: RunPlan, rows: list[WorkerStatus], supervisord_pid: int) -> dict[str, dict[str, Any]]:
    """Each pool: its bounds, its workers serving, its target; of a pool the pools program runs, its recycles and
    its last steps (time, what, why) too."""
    states = read_pools_state(plan.pools_state, supervisord_pid)
    found = {}
    for pool in plan.settings.pools:
        state = states.get(pool.name)
        serving = state.serving if state else [r.port for r in rows if r.pool == pool.name and r.state == "RUNNING"]
        found[pool.name] = {
            "bounds": pool.bounds(),
            "serving": len(serving),
            "target": state.target if state else pool.workers,
            "pinned": bool(state and state.pinned),
            "recycles": state.recycles if state else {},
            "events": state.events if state else [],
        }
    return found


def table(status: dict[str, Any]) -> str:
    header = ("WORKER", "POOL", "STATE", "PID", "PORT", "UPTIME", "CONNECTED", "UNCONNECTED", "WS", "RSS",
              "BUILD_P95", "RESTARTS", "RESUMED/FRESH/FAILED")  # fmt: skip
    rows = [header]
    for w in status["workers"]:
        rows.append(
            (
                w["name"], w["pool"], w["state"], str(w["pid"] or "-"), str(w["port"]), duration(w["uptime_s"]),
                _count(w["connected"]), _count(w["unconnected"]), _count(w["websockets"]), _megabytes(w["rss_bytes"]),
                "-" if w["build_p95_s"] is None else f"{w['build_p95_s'] * 1000:.0f}ms", str(w["restarts"]),
                _resumes(w["resumes"]),
            )
        )  # fmt: skip
    t = status["totals"]
    rows.append(
        (
            "TOTAL", "", f"{t['running']}/{t['workers']} up", "", "", "", str(t["connected"]), str(t["unconnected"]),
            str(t["websockets"]), _megabytes(t["rss_bytes"]), "", str(t["restarts"]), _resumes(t["resumes"]),
        )
    )  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [f"supervisord pid {status['supervisord_pid']}, {status['supervisord_conf']}"]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    for name, pool in status["pools"].items():
        pinned = ", pinned" if pool["pinned"] else ""
        lines.append(f"pool {name}: {pool['serving']} serving ({pool['bounds']}, target {pool['target']}{pinned})")
        recycled = ", ".join(f"{n} for {reason}" for reason, n in pool["recycles"].items() if n)
        lines += [f"  recycled: {recycled}"] if recycled else []
        lines += [f"  {time.strftime('%H:%M:%S', time.localtime(at))} {text}" for at, text in pool["events"][-3:]]
    if status["services"]:
        lines.append("  ".join(f"{name} {s['state']}" for name, s in sorted(status["services"].items())))
    if "ops" in status:
        lines.append(f"metrics and the live dashboard: {status['ops']}")
    return "\n".join(lines)


def _resumes(counts: dict[str, int] | None) -> str:
    return "-" if counts is None else "/".join(str(counts.get(outcome, 0)) for outcome in RESUME_OUTCOMES)


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def _megabytes(value: float | None) -> str:
    return "-" if value is None else f"{value / 1e6:.0f}MB"


def duration(seconds: int) -> str:
    if seconds <= 0:
        return "-"
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def show(plan: RunPlan, as_json: bool = False, watch: bool = False) -> None:
    if not watch:
        status = gather(plan)
        print(json.dumps(status, indent=2) if as_json else table(status))
        return
    try:
        while True:
            status = gather(plan)
            text = json.dumps(status) if as_json else table(status)
            if as_json:
                print(text, flush=True)  # one JSON document per line
            else:
                sys.stdout.write(f"\x1b[H\x1b[2J{text}\n(every {WATCH_INTERVAL_S:.0f} s; Ctrl-C ends)\n")
                sys.stdout.flush()
            time.sleep(WATCH_INTERVAL_S)
    except KeyboardInterrupt:
        pass
