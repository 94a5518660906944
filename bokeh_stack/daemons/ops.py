"""The ops process: `python -m bokeh_stack.daemons.ops OPS_FILE`, a Bokeh server on a unix socket (ops.sock in the
runtime dir) that nginx's ops listener alone reaches. It serves

    /metrics   one fresh scrape of every worker and nginx (bokeh_stack/daemons/fleet.py), for Prometheus
    /ops       a live dashboard of the fleet: the last hour, sampled every few seconds

OPS_FILE (ops.json, rendered from the settings) says what to scrape. The dashboard only reads the workers'
metrics: watching the fleet creates no session on it.
"""

from __future__ import annotations

import html
import os
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from bokeh_stack.config.handoff import OpsConfig, PoolState, read_pools_state
from bokeh_stack.config.limits import RESUME_OUTCOMES
from bokeh_stack.config.topology import OPS_TRUSTED_ORIGIN, route
from bokeh_stack.daemons import fleet

# A worker's sample and table columns for its resumes, one per outcome.
RESUME_KEYS = tuple(f"resume_{outcome}" for outcome in RESUME_OUTCOMES)

# The build p95 on the dashboard is over this many of the last samples (a minute at 5 s).
BUILD_WINDOW_SAMPLES = 12
SERIES = (
    ("connected", "Connected sessions", ""),
    ("websockets", "Websocket connections", ""),
    ("rss_mb", "Memory (RSS)", "MB"),
    ("build_p95_ms", "Document build p95 (last minute)", "ms"),
    ("lag_ms", "Event loop lag", "ms"),
)


@dataclass(frozen=True)
class Sample:
    """One row of the dashboard: every worker's figures and nginx's request rate at one moment."""

    t_ms: float
    workers: dict[str, dict[str, Any]]
    nginx_rps: float | None
    pools: dict[str, PoolState] = field(default_factory=dict)  # of the pools program's pools


@dataclass
class History:
    """The last hour of samples, taken by one sampler for every open dashboard."""

    config: OpsConfig
    samples: deque[Sample] = field(default_factory=deque)
    _summaries: deque[dict[str, fleet.WorkerSummary]] = field(default_factory=deque)
    _last_nginx: tuple[float, int] | None = None

    async def sample(self) -> Sample:
        pools = read_pools_state(self.config.pools_state, os.getppid())
        targets = fleet.serving(self.config.targets, pools)
        found = await fleet.scrape(targets, self.config.metrics_path, self.config.nginx_status_at)
        summaries = {w.worker: w for w in fleet.summarize(found)}
        window = list(self._summaries)[-BUILD_WINDOW_SAMPLES:]
        workers = {}
        for name, w in summaries.items():
            earlier = next((old[name] for old in window if name in old and old[name].up), None)
            recent = fleet.bucket_delta(w.build_buckets, earlier.build_buckets) if earlier else w.build_buckets
            p95 = fleet.quantile(0.95, recent)
            was = self._summaries[-1].get(name) if self._summaries else None
            restarted = bool(was) and (w.restarts > was.restarts or (w.up and not was.up))
            workers[name] = {
                "pool": w.pool,
                "up": w.up,
                "restarted": restarted,
                "connected": w.connected,
                "unconnected": w.unconnected,
                "websockets": w.websockets,
                "rss_mb": w.rss_bytes / 1e6,
                "build_p95_ms": float("nan") if p95 is None else p95 * 1000,
                "lag_ms": w.loop_lag_s * 1000,
                "restarts": w.restarts,
                **{key: w.resumes.get(outcome, 0) for key, outcome in zip(RESUME_KEYS, RESUME_OUTCOMES, strict=True)},
            }
        rps = None
        if found.nginx:
            now = (found.at, found.nginx["requests"])
            if self._last_nginx and now[0] > self._last_nginx[0] and now[1] >= self._last_nginx[1]:
                rps = (now[1] - self._last_nginx[1]) / (now[0] - self._last_nginx[0])
            self._last_nginx = now
        row = Sample(found.at * 1000, workers, rps, pools)
        for kept, item in ((self.samples, row), (self._summaries, summaries)):
            kept.append(item)
            while len(kept) > self.config.history:
                kept.popleft()
        return row

    def since(self, t_ms: float) -> list[Sample]:
        return [s for s in self.samples if s.t_ms > t_ms]


def dashboard(history: History):
    """The /ops app: a document per browser tab, fed from the shared history."""
    from bokeh.layouts import column, gridplot
    from bokeh.models import ColumnDataSource, DataTable, Div, NumberFormatter, TableColumn
    from bokeh.palettes import Category10_10
    from bokeh.plotting import figure

    def make(doc) -> None:
        workers = sorted({w for s in history.samples for w in s.workers} or {t.worker for t in history.config.targets})
        colors = {w: Category10_10[i % 10] for i, w in enumerate(workers)}
        lines = {
            w: ColumnDataSource({"t": [], **{key: [] for key, _, _ in SERIES}}, name=f"ops_worker_{w}") for w in workers
        }
        restarts = ColumnDataSource({"t": [], "worker": [], "y": []})
        nginx = ColumnDataSource({"t": [], "rps": []}, name="ops_nginx")
        table = ColumnDataSource(_table([]), name="ops_workers")
        plots = []
        for key, title, unit in SERIES:
            p = figure(
                title=f"{title} ({unit})" if unit else title, x_axis_type="datetime", height=220,
                sizing_mode="stretch_width", tools="pan,xwheel_zoom,reset,hover", toolbar_location="above",
            )  # fmt: skip
            for w in workers:
                p.line("t", key, source=lines[w], color=colors[w], legend_label=w, line_width=2)
            p.legend.location = "top_left"
            p.legend.label_text_font_size = "8pt"
            if key == "connected":
                p.scatter("t", "y", source=restarts, marker="x", size=12, color="red", legend_label="restart")
            plots.append(p)
        rps = figure(title="nginx requests per second", x_axis_type="datetime", height=220, sizing_mode="stretch_width")
        rps.line("t", "rps", source=nginx, line_width=2)
        plots.append(rps)
        columns = [
            TableColumn(field="worker", title="worker"),
            TableColumn(field="pool", title="pool"),
            TableColumn(field="state", title="state"),
            *(
                TableColumn(field=key, title=title, formatter=NumberFormatter(format=fmt))
                for key, title, fmt in (
                    ("connected", "connected", "0"), ("unconnected", "unconnected", "0"),
                    ("websockets", "websockets", "0"), ("rss_mb", "RSS MB", "0.0"),
                    ("build_p95_ms", "build p95 ms", "0.0"), ("lag_ms", "loop lag ms", "0.0"),
                    ("restarts", "restarts", "0"),
                    *((key, f"resume: {o}", "0") for key, o in zip(RESUME_KEYS, RESUME_OUTCOMES, strict=True)),
                )
            ),
        ]  # fmt: skip
        heading = Div(text="<h2>bokeh-stack: the fleet</h2>", sizing_mode="stretch_width")
        status = Div(text="waiting for the first sample", sizing_mode="stretch_width")
        pools = Div(text="", sizing_mode="stretch_width", name="ops_pools")
        grid = gridplot(plots, ncols=2, sizing_mode="stretch_width")
        workers_table = DataTable(
            source=table, columns=columns, height=40 + 26 * min(len(workers), 12), sizing_mode="stretch_width"
        )
        doc.add_root(column(heading, status, pools, workers_table, grid, sizing_mode="stretch_width"))
        doc.title = "bokeh-stack ops"
        shown = {"t": 0.0}

        def update() -> None:
            new = history.since(shown["t"])
            if not new:
                return
            shown["t"] = new[-1].t_ms
            rollover = history.config.history
            for w in workers:
                rows = [(s.t_ms, s.workers[w]) for s in new if w in s.workers]
                if rows:
                    data = {"t": [t for t, _ in rows]}
                    data.update({key: [r[key] if r["up"] else float("nan") for _, r in rows] for key, _, _ in SERIES})
                    lines[w].stream(data, rollover=rollover)
            marks = [(s.t_ms, w, r["connected"]) for s in new for w, r in s.workers.items() if r["restarted"]]
            if marks:
                restarts.stream(dict(zip(("t", "worker", "y"), map(list, zip(*marks, strict=True)), strict=True)))
            rates = [float("nan") if s.nginx_rps is None else s.nginx_rps for s in new]
            nginx.stream({"t": [s.t_ms for s in new], "rps": rates}, rollover=rollover)
            table.data = _table(new[-1].workers.items())
            last = new[-1]
            up = sum(r["up"] for r in last.workers.values())
            sessions = sum(r["connected"] for r in last.workers.values())
            when = time.strftime("%H:%M:%S", time.localtime(last.t_ms / 1000))
            status.text = f"{up}/{len(last.workers)} workers up, {sessions} connected sessions, at {when}"
            pools.text = _pools_html(last.pools)

        update()
        doc.add_periodic_callback(update, int(history.config.interval_s * 1000))

    return make


def _pools_html(pools: dict[str, PoolState]) -> str:
    """Each pool the pools program runs: its workers, its target and its last steps."""
    items = []
    for name, p in sorted(pools.items()):
        steps = "".join(f"<li>{_clock(at)} {html.escape(text)}</li>" for at, text in p.events[-3:])
        pinned = ", pinned" if p.pinned else ""
        head = f"<b>pool {html.escape(name)}</b>: {len(p.serving)} serving ({p.bounds}, target {p.target}{pinned})"
        items.append(f"<li>{head}<ul>{steps}</ul></li>")
    return f"<ul>{''.join(items)}</ul>" if items else ""


def _clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at))


def _table(rows) -> dict[str, list]:
    keys = ("pool", "connected", "unconnected", "websockets", "rss_mb", "build_p95_ms", "lag_ms", "restarts",
            *RESUME_KEYS)  # fmt: skip
    rows = list(rows)
    data: dict[str, list] = {"worker": [w for w, _ in rows], "state": [("up" if r["up"] else "DOWN") for _, r in rows]}
    data.update({key: [r[key] for _, r in rows] for key in keys})
    return data


def serve(config: OpsConfig) -> None:
    from bokeh.application import Application
    from bokeh.application.handlers.function import FunctionHandler
    from bokeh.server.server import Server
    from tornado.ioloop import PeriodicCallback
    from tornado.web import RequestHandler

    history = History(config)

    class MetricsHandler(RequestHandler):
        async def get(self) -> None:
            pools = read_pools_state(config.pools_state, os.getppid())
            targets = fleet.serving(config.targets, pools)
            found = await fleet.scrape(targets, config.metrics_path, config.nginx_status_at)
            self.set_header("Content-Type", CONTENT_TYPE_LATEST)
            self.set_header("Cache-Control", "no-store")
            more = fleet.pool_families(config.pools, found, pools)
            self.write(generate_latest(fleet.FleetCollector(found, more)))

    Path(config.socket).unlink(missing_ok=True)  # left by an ops process that was killed
    server = Server(
        {route("ops"): Application(FunctionHandler(dashboard(history)))},
        unix_socket=config.socket,
        allow_websocket_origin=[OPS_TRUSTED_ORIGIN],
        extra_patterns=[(route("metrics"), MetricsHandler)],
        # The dashboard's documents are cheap and few: a closed tab's session goes within a minute.
        check_unused_sessions_milliseconds=10_000,
        unused_session_lifetime_milliseconds=30_000,
    )
    server.start()
    loop = server.io_loop
    loop.add_callback(history.sample)
    PeriodicCallback(history.sample, config.interval_s * 1000).start()
    print(f"bokeh-stack ops: /metrics and /ops on {config.socket}, {len(config.targets)} workers", flush=True)
    loop.start()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m bokeh_stack.daemons.ops OPS_FILE", file=sys.stderr)
        return 2
    try:
        config = OpsConfig.read(Path(argv[0]))
    except (OSError, ValueError, KeyError) as e:
        print(f"bokeh-stack ops: cannot read {argv[0]}: {e}", file=sys.stderr)
        return 2
    serve(config)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
