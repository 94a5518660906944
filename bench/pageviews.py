"""Row 1, page views: `concurrency` first-visit browsers doing page views back to back on the counter app, with
keep-alive connections (one per browser, reused for its next page) or `Connection: close`."""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass

from bench.clients import BenchError, HTTPConnection, light_page_view
from bench.setups import Setup
from harness.stack import read_executions


@dataclass
class PageViewResult:
    views: int  # completed
    failed: int
    per_s: float
    p50_ms: float
    p99_ms: float
    executions_per_view: float
    client_cpu: float  # the load generator's CPU seconds per wall second


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1]


async def _drive(setup: Setup, seconds: float, warmup: float, concurrency: int, keep_alive: bool, cookie: str):
    url = setup.url("/dashboard")
    start = time.monotonic()
    measure_from, deadline = start + warmup, start + warmup + seconds
    timings, failures = [], []

    async def browser() -> None:
        conn = HTTPConnection(url, keep_alive=keep_alive)
        try:
            while time.monotonic() < deadline:
                began = time.monotonic()
                try:
                    view = await light_page_view(conn, url, setup.origin, cookie=cookie)
                except (TimeoutError, BenchError, OSError) as e:
                    if began >= measure_from:
                        failures.append(repr(e))
                    conn.close()
                    continue
                if began >= measure_from:
                    timings.append(view)
        finally:
            conn.close()

    await asyncio.gather(*(browser() for _ in range(concurrency)))
    return timings, failures, time.monotonic() - measure_from


def page_views(
    setup: Setup, seconds: float, concurrency: int, keep_alive: bool, warmup: float, cookie: str = ""
) -> PageViewResult:
    """`cookie`: sent by every browser (a sign-in cookie, name=value)."""
    cpu = time.process_time()
    timings, failures, elapsed = asyncio.run(_drive(setup, seconds, warmup, concurrency, keep_alive, cookie))
    cpu = (time.process_time() - cpu) / (elapsed + warmup)
    ids = {t.session_id for t in timings}
    executions = sum(1 for e in read_executions(setup.record) if e.session_id in ids)
    ms = [t.seconds * 1000 for t in timings]
    return PageViewResult(
        views=len(timings),
        failed=len(failures),
        per_s=len(timings) / elapsed,
        p50_ms=percentile(ms, 50),
        p99_ms=percentile(ms, 99),
        executions_per_view=executions / len(timings) if timings else float("nan"),
        client_cpu=cpu,
    )
