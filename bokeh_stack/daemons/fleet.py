"""One scrape of the whole fleet: every worker's own metrics (bokeh_stack/patches/worker_metrics.py) and nginx's
stub_status, fetched concurrently from where bokeh_stack/config/topology.py says they are, and merged into one
Prometheus exposition in which every worker series carries `worker` (host:port, or the process name on a unix
socket) and `pool` labels. The ops process serves it as
/metrics; `bokeh-stack status` and the /ops dashboard read the same scrape through summarize()."""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from bokeh_stack.config.handoff import PoolState
from bokeh_stack.config.limits import RECYCLE_REASONS, SCRAPE_TIMEOUT_S
from bokeh_stack.config.topology import Endpoint, Target, resolve_targets

# stub_status's page; Prometheus' nginx exporter names (nginx/nginx-prometheus-exporter), so its dashboards fit.
_STUB_STATUS = re.compile(
    r"Active connections:\s*(\d+)\s+server accepts handled requests\s+(\d+)\s+(\d+)\s+(\d+)\s+"
    r"Reading:\s*(\d+)\s+Writing:\s*(\d+)\s+Waiting:\s*(\d+)"
)


@dataclass
class Scrape:
    """What one scrape found: each worker's metric families (None: it did not answer) and nginx's counters."""

    workers: dict[Target, list[Metric] | None]
    nginx: dict[str, int] | None
    seconds: float
    at: float = field(default_factory=time.time)


async def scrape(
    targets: Iterable[Target],
    metrics_path: str,
    nginx_status: tuple[Endpoint, str] | None = None,
    timeout: float = SCRAPE_TIMEOUT_S,
) -> Scrape:
    """Every worker's metrics and nginx's stub_status (where, path), at once."""
    start = time.perf_counter()
    resolved = await resolve_targets(targets)
    pages = [t.endpoint.request(metrics_path, timeout) for t in resolved]
    if nginx_status:
        pages.append(nginx_status[0].request(nginx_status[1], timeout))
    bodies = await asyncio.gather(*pages)
    workers = {t: _parse(body) for t, body in zip(resolved, bodies, strict=False)}
    nginx = _parse_stub_status(bodies[-1]) if nginx_status else None
    return Scrape(workers, nginx, time.perf_counter() - start)


def _parse(body: str | None) -> list[Metric] | None:
    if body is None:
        return None
    try:
        return list(text_string_to_metric_families(body))
    except ValueError:
        return None  # not a worker's metrics: as good as no answer


def _parse_stub_status(body: str | None) -> dict[str, int] | None:
    match = _STUB_STATUS.search(body or "")
    if not match:
        return None
    keys = ("active", "accepted", "handled", "requests", "reading", "writing", "waiting")
    return dict(zip(keys, map(int, match.groups()), strict=True))


def serving(targets: Iterable[Target], states: Mapping[str, PoolState]) -> list[Target]:
    """The workers to look at: of a pool the pools program runs, those it says serve (its other places hold no
    worker, which is no worker down); every other worker."""
    return [t for t in targets if t.pool not in states or t.port in states[t.pool].serving]


def pool_families(
    bounds: Mapping[str, tuple[int, int]], found: Scrape, states: Mapping[str, PoolState]
) -> list[Metric]:
    """Each pool's serving workers, its target and its recycles."""
    workers = GaugeMetricFamily(
        "bokeh_stack_pool_workers", "Workers of the pool serving (in nginx's upstream, answering)", labels=["pool"]
    )
    target = GaugeMetricFamily(
        "bokeh_stack_pool_target_workers",
        "Workers the pool aims at: its size, or what its connected sessions need within its bounds (or an operator's)",
        labels=["pool"],
    )
    recycles = CounterMetricFamily(
        "bokeh_stack_worker_recycles", "Workers replaced past a recycle limit, by reason", labels=["pool", "reason"]
    )
    for name, (lowest, _) in bounds.items():
        up = sum(1 for t, families in found.workers.items() if t.pool == name and families is not None)
        state = states.get(name)
        workers.add_metric([name], up)
        target.add_metric([name], state.target if state else lowest)
        for reason in RECYCLE_REASONS:
            recycles.add_metric([name, reason], state.recycles.get(reason, 0) if state else 0)
    return [workers, target, recycles]


class FleetCollector:
    """A scrape as a prometheus_client collector: generate_latest(FleetCollector(scrape)) is /metrics."""

    def __init__(self, found: Scrape, more: Iterable[Metric] = ()) -> None:
        self.found = found
        self.more = list(more)

    def collect(self) -> Iterable[Metric]:
        merged: dict[str, Metric] = {}
        up = GaugeMetricFamily(
            "bokeh_stack_worker_up", "1 if the worker answered this scrape", labels=["worker", "pool"]
        )
        took = GaugeMetricFamily(
            "bokeh_stack_scrape_duration_seconds", "Time this scrape of the fleet took", value=self.found.seconds
        )
        for target, families in self.found.workers.items():
            up.add_metric([target.worker, target.pool], 0 if families is None else 1)
            for family in families or ():
                into = merged.get(family.name)
                if into is None:
                    into = merged[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
                for sample in family.samples:
                    labels = {**sample.labels, "worker": target.worker, "pool": target.pool}
                    into.add_sample(sample.name, labels, sample.value)
        yield up
        yield took
        yield from self.more
        yield from merged.values()
        yield from _nginx_families(self.found.nginx)


def _nginx_families(nginx: Mapping[str, int] | None) -> Iterable[Metric]:
    yield GaugeMetricFamily("nginx_up", "1 if nginx's stub_status answered this scrape", value=int(nginx is not None))
    if nginx is None:
        return
    for state in ("active", "reading", "writing", "waiting"):
        yield GaugeMetricFamily(f"nginx_connections_{state}", f"Client connections {state}", value=nginx[state])
    for counter in ("accepted", "handled"):
        yield CounterMetricFamily(f"nginx_connections_{counter}", f"Client connections {counter}", nginx[counter])
    yield CounterMetricFamily("nginx_http_requests", "HTTP requests nginx has served", nginx["requests"])


@dataclass(frozen=True)
class WorkerSummary:
    """One worker as an operator reads it (bokeh-stack status, the /ops dashboard)."""

    worker: str
    pool: str
    up: bool
    connected: int = 0
    unconnected: int = 0
    websockets: int = 0
    rss_bytes: float = 0.0
    cpu_s: float = 0.0
    loop_lag_s: float = 0.0
    restarts: int = 0
    created: int = 0
    # Sessions tabs reconnected to here, by what became of them: resumed, fresh, failed (bokeh_stack/resume/).
    resumes: dict[str, int] = field(default_factory=dict)
    # Document builds so far: cumulative count per bucket bound (the histogram, summed over the apps).
    build_buckets: tuple[tuple[float, float], ...] = ()

    @property
    def build_p95_s(self) -> float | None:
        return quantile(0.95, self.build_buckets)


def summarize(found: Scrape) -> list[WorkerSummary]:
    return [_summary(target, families) for target, families in found.workers.items()]


def _summary(target: Target, families: list[Metric] | None) -> WorkerSummary:
    if families is None:
        return WorkerSummary(target.worker, target.pool, up=False)
    values: dict[str, float] = {}
    connected = unconnected = 0.0
    buckets: dict[float, float] = {}
    resumes: dict[str, int] = {}
    for family in families:
        for sample in family.samples:
            if sample.name == "bokeh_stack_sessions":
                if sample.labels.get("state") == "connected":
                    connected += sample.value
                else:
                    unconnected += sample.value
            elif sample.name == "bokeh_stack_sessions_resumed_total":
                outcome = sample.labels.get("outcome", "")
                resumes[outcome] = resumes.get(outcome, 0) + int(sample.value)
            elif sample.name == "bokeh_stack_document_build_seconds_bucket":
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
            else:
                values[sample.name] = values.get(sample.name, 0.0) + sample.value
    return WorkerSummary(
        target.worker,
        target.pool,
        up=True,
        connected=int(connected),
        unconnected=int(unconnected),
        websockets=int(values.get("bokeh_stack_websocket_connections", 0)),
        rss_bytes=values.get("process_resident_memory_bytes", 0.0),
        cpu_s=values.get("process_cpu_seconds_total", 0.0),
        loop_lag_s=values.get("bokeh_stack_event_loop_lag_seconds", 0.0),
        restarts=int(values.get("bokeh_stack_worker_restarts_total", 0)),
        created=int(values.get("bokeh_stack_sessions_created_total", 0)),
        resumes=resumes,
        build_buckets=tuple(sorted(buckets.items())),
    )


def quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """Prometheus' histogram_quantile over cumulative (upper bound, count) buckets; None with no observation."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # beyond the largest finite bucket: its bound, as Prometheus answers
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / max(count - lower_count, 1e-12)
        lower_bound, lower_count = bound, count
    return lower_bound


def bucket_delta(
    now: Iterable[tuple[float, float]], then: Iterable[tuple[float, float]]
) -> tuple[tuple[float, float], ...]:
    """The builds between two samples of one worker's histogram (a restarted worker's counts start again)."""
    before = dict(then)
    now = tuple(now)
    if any(count < before.get(bound, 0.0) for bound, count in now):
        return now
    return tuple((bound, count - before.get(bound, 0.0)) for bound, count in now)
