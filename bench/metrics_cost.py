"""What counting costs: bokeh-stack with its workers' metrics on and off (setting ops.metrics, bench/on_off.py), and
how long one /metrics scrape of a larger fleet takes."""

from __future__ import annotations

import statistics
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from bench import on_off
from bench.setups import started

# Counting may cost at most this much of the page views and of the streaming capacity.
LEAST = 0.97


@dataclass
class MetricsCost:
    on_off: on_off.OnOff
    scrape_workers: int = 0
    scrape_ms: list[float] = field(default_factory=list)


def metrics_cost(
    apps: Path, workers: int, directory: Path, session: dict, args, rounds: int, scrape_workers: int
) -> MetricsCost:
    settings = {on: {"ops": {"metrics": on}} for on in (True, False)}
    pair = on_off.on_off("metrics", "ops.metrics", settings, apps, workers, directory, session, args, rounds)
    result = MetricsCost(pair)
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
    return "\n".join([
        on_off.markdown(cost.on_off),
        "",
        f"One `/metrics` scrape of {cost.scrape_workers} workers and nginx: "
        f"p50 {statistics.median(cost.scrape_ms):.1f} ms, max {max(cost.scrape_ms):.1f} ms (20 scrapes).",
    ])  # fmt: skip


def targets(cost: MetricsCost) -> list[tuple[str, str, bool | None]]:
    out = on_off.targets(cost.on_off, LEAST)
    if cost.scrape_ms:
        worst = max(cost.scrape_ms)
        out.append((f"one /metrics scrape of {cost.scrape_workers} workers < 1 s", f"{worst:.0f} ms", worst < 1000))
    return out
