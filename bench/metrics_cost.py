"""What counting costs: bokeh-stack with its workers' metrics on and off (setting ops.metrics), side by side in one
run, alternating (on, off, off, on, ...) so that a drift of this shared machine falls on both; and how long one
/metrics scrape of a larger fleet takes."""

from __future__ import annotations

import statistics
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from bench.pageviews import page_views
from bench.setups import started
from bench.streaming import capacity


@dataclass
class MetricsCost:
    rounds: int
    page_views_per_s: dict[bool, list[float]] = field(default_factory=lambda: {True: [], False: []})
    capacity_sessions: dict[bool, list[int]] = field(default_factory=lambda: {True: [], False: []})
    scrape_workers: int = 0
    scrape_ms: list[float] = field(default_factory=list)

    def ratio(self, measured: dict[bool, list[float]]) -> float | None:
        return on_off_ratio(measured)


def on_off_ratio(measured: dict[bool, list[float]]) -> float | None:
    """The mean of the rounds with a feature on over the mean of those with it off (None without both)."""
    on, off = statistics.mean(measured[True] or [0]), statistics.mean(measured[False] or [0])
    return on / off if off else None


def metrics_cost(
    apps: Path, workers: int, directory: Path, session: dict, args, rounds: int, scrape_workers: int
) -> MetricsCost:
    result = MetricsCost(rounds)
    first, step, most = map(int, args.capacity.split(","))
    order = [on for i in range(rounds) for on in ((True, False) if i % 2 == 0 else (False, True))]
    for n, on in enumerate(order):
        name, settings = f"metrics-{'on' if on else 'off'}-{n}", {"ops": {"metrics": on}}
        with started("stack", apps, workers, directory / f"{name}-views", session, settings) as setup:
            views = page_views(setup, args.seconds, args.concurrency, True, args.warmup)
            result.page_views_per_s[on].append(views.per_s)
        # A fresh stack: the page views' sessions would expire during the ramp and skew it.
        with started("stack", apps, workers, directory / f"{name}-capacity", session, settings) as setup:
            pid = setup.worker_pids()[0]
            cap = capacity(setup.worker_url("/streaming"), setup.origin, pid, first, step, most, args.capacity_seconds)
            result.capacity_sessions[on].append(cap.sessions)
    with started("stack", apps, scrape_workers, directory / "scrape", session) as setup:
        url = f"http://127.0.0.1:{setup.ops_port}/metrics"
        for _ in range(20):
            start = time.perf_counter()
            with urllib.request.urlopen(url, timeout=10) as answer:
                body = answer.read()
            result.scrape_ms.append((time.perf_counter() - start) * 1000)
        result.scrape_workers = body.count(b"bokeh_stack_worker_up{")
    return result


def markdown(cost: MetricsCost) -> str:
    pv, cap = cost.page_views_per_s, cost.capacity_sessions
    pv_ratio, cap_ratio = cost.ratio(pv), cost.ratio(cap)

    def cells(values: list[float], fmt: str) -> str:
        return ", ".join(format(v, fmt) for v in values)

    lines = [
        f"Metrics on vs off (setting `ops.metrics`), bokeh-stack, {cost.rounds} round(s) alternating:",
        "",
        "| | metrics on | metrics off | on / off |",
        "|---|---|---|---|",
        f"| page views/s, keep-alive | {cells(pv[True], '.1f')} | {cells(pv[False], '.1f')} | "
        f"{'–' if pv_ratio is None else f'{pv_ratio:.3f}'} |",
        f"| sessions one worker carries at 10 Hz | {cells(cap[True], 'd')} | {cells(cap[False], 'd')} | "
        f"{'–' if cap_ratio is None else f'{cap_ratio:.3f}'} |",
        "",
        f"One `/metrics` scrape of {cost.scrape_workers} workers and nginx: "
        f"p50 {statistics.median(cost.scrape_ms):.1f} ms, max {max(cost.scrape_ms):.1f} ms (20 scrapes).",
    ]
    return "\n".join(lines)


def targets(cost: MetricsCost) -> list[tuple[str, str, bool | None]]:
    out = []
    for label, measured in (("page views/s", cost.page_views_per_s), ("streaming capacity", cost.capacity_sessions)):
        ratio = cost.ratio(measured)
        if ratio is not None:
            out.append((f"metrics cost: {label} on / off ≥ 0.97", f"{ratio:.3f}", ratio >= 0.97))
    if cost.scrape_ms:
        worst = max(cost.scrape_ms)
        out.append((f"one /metrics scrape of {cost.scrape_workers} workers < 1 s", f"{worst:.0f} ms", worst < 1000))
    return out
