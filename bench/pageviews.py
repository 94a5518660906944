"""Row 1, page views: `concurrency` first-visit browsers doing page views back to back on the counter app, with
keep-alive connections (one per browser, reused for its next page) or `Connection: close`."""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from dataclasses import dataclass

from bench.clients import BenchError, HTTPConnection, ViewTiming, light_page_view
from bench.setups import Setup
from harness.stack import read_executions


@dataclass
class PageViewResult:
    views: int  # completed within the window
    failed: int  # failed within the window
    per_s: float
    p50_ms: float
    p99_ms: float
    executions_per_view: float
    client_cpu: float  # the load generator's CPU seconds per wall second
    # Page views that browsers were still waiting for when the window closed (a stalled worker finishes none), and the
    # longest of those waits: 0 completed and 0 failed says nothing without them.
    loading_at_end: int = 0
    longest_wait_s: float = 0.0


@dataclass
class _Attempt:
    began: float
    ended: float = math.inf
    view: ViewTiming | None = None  # None: it failed


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1]


async def _drive(
    setup: Setup, seconds: float, warmup: float, concurrency: int, keep_alive: bool, cookie: str
) -> tuple[list[_Attempt], float, float]:
    """Browsers load pages back to back until the window closes, and finish the page view they are in (each of
    its steps has its timeout). Returns every attempt and the window."""
    url = setup.url("/dashboard")
    start = time.monotonic()
    measure_from, deadline = start + warmup, start + warmup + seconds
    attempts: list[_Attempt] = []

    async def browser() -> None:
        conn = HTTPConnection(url, keep_alive=keep_alive)
        try:
            while time.monotonic() < deadline:
                attempt = _Attempt(time.monotonic())
                attempts.append(attempt)
                try:
                    attempt.view = await light_page_view(conn, url, setup.origin, cookie=cookie)
                except (TimeoutError, BenchError, OSError):
                    conn.close()
                attempt.ended = time.monotonic()
        finally:
            conn.close()

    await asyncio.gather(*(browser() for _ in range(concurrency)))
    return attempts, measure_from, deadline


def page_views(
    setup: Setup, seconds: float, concurrency: int, keep_alive: bool, warmup: float, cookie: str = ""
) -> PageViewResult:
    """Page views and failures count where they end within the window; those that end after it were still loading
    when it closed. `cookie`: sent by every browser (a sign-in cookie, name=value)."""
    cpu, began = time.process_time(), time.monotonic()
    attempts, measure_from, deadline = asyncio.run(_drive(setup, seconds, warmup, concurrency, keep_alive, cookie))
    cpu = (time.process_time() - cpu) / (time.monotonic() - began)
    ended = [a for a in attempts if measure_from <= a.ended <= deadline]
    timings = [a.view for a in ended if a.view is not None]
    loading = [a for a in attempts if a.ended > deadline]
    ids = {t.session_id for t in timings}
    executions = sum(1 for e in read_executions(setup.record) if e.session_id in ids)
    ms = [t.seconds * 1000 for t in timings]
    return PageViewResult(
        views=len(timings),
        failed=len(ended) - len(timings),
        per_s=len(timings) / (deadline - measure_from),
        p50_ms=percentile(ms, 50),
        p99_ms=percentile(ms, 99),
        executions_per_view=executions / len(timings) if timings else float("nan"),
        client_cpu=cpu,
        loading_at_end=len(loading),
        longest_wait_s=max((deadline - a.began for a in loading), default=0.0),
    )
