"""Row 6, what a page view costs: the CPU one worker spends per page view (the page GET, the websocket, the document
pull, and the session's clean-up and garbage collection once it expires), against what building and serializing
the same page's document costs in a plain Python process with plain Bokeh (the floor Bokeh itself sets); and how
long a streaming session's updates wait while that worker builds pages at saturation (stalls).

    python -m bench.pagecost --plain APP_DIR VIEWS    # the floor, in this process: prints JSON
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.clients import BenchError, HTTPConnection, Subscriber, light_page_view
from bench.pageviews import percentile
from bench.setups import Setup

STREAMING_SESSIONS = 6


@dataclass
class Floor:
    build_ms: float
    serialize_ms: float

    @property
    def cpu_ms(self) -> float:
        return self.build_ms + self.serialize_ms


@dataclass
class PageCost:
    views: int
    worker_cpu_ms: float  # the worker's CPU per page view, clean-up included
    floor: Floor
    views_per_s: float
    stall_p99_ms: float  # a streamed update's delay (arrival minus the server's timestamp) meanwhile
    stall_max_ms: float

    @property
    def ratio(self) -> float:
        return self.worker_cpu_ms / self.floor.cpu_ms


def floor(app_dir: Path, views: int) -> Floor:
    """Build + serialize the app's document `views` times in a fresh plain-Bokeh process (after 3 unmeasured)."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.pagecost", "--plain", str(app_dir), str(views)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    return Floor(**json.loads(out.stdout.splitlines()[-1]))


def _measure_floor(app_dir: str, views: int) -> dict[str, float]:
    """Each view: a session's document built as Bokeh's server builds it (ApplicationContext, after the app's
    on_server_loaded), then its PULL-DOC reply serialized; process CPU of each, per view."""
    import asyncio

    from bokeh.command.util import build_single_handler_application
    from bokeh.protocol import Protocol

    from harness.sessions import application_context, build_session

    async def measure() -> dict[str, float]:
        context = application_context(build_single_handler_application(app_dir))
        protocol, build, serialize = Protocol(), 0.0, 0.0
        for i in range(views + 3):
            began = time.process_time()
            session = await build_session(context, f"floor-{i}")
            built = time.process_time()
            protocol.create("PULL-DOC-REPLY", "request", session.document).content_json  # noqa: B018 (serializes)
            if i >= 3:
                build, serialize = build + built - began, serialize + time.process_time() - built
        return {"build_ms": build / views * 1000, "serialize_ms": serialize / views * 1000}

    return asyncio.run(measure())


def _cpu_s(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


async def _load(setup: Setup, app: str, views: int, concurrency: int, stream: bool) -> tuple[int, float, list[float]]:
    url = setup.worker_url(f"/{app}")
    subscribers = []
    if stream:
        streaming = setup.worker_url("/streaming")
        subscribers = [
            await Subscriber.connect(streaming, setup.origin, measure_delay=True) for _ in range(STREAMING_SESSIONS)
        ]
        await asyncio.sleep(1)
        for s in subscribers:
            s.delays_ms.clear()
    left = views
    done = 0

    async def browser() -> None:
        nonlocal left, done
        conn = HTTPConnection(url)
        try:
            while left > 0:
                left -= 1
                try:
                    await light_page_view(conn, url, setup.origin)
                    done += 1
                except (TimeoutError, BenchError, OSError):
                    conn.close()
        finally:
            conn.close()

    began = time.monotonic()
    try:
        await asyncio.gather(*(browser() for _ in range(concurrency)))
    finally:
        for s in subscribers:
            s.close()
    return done, time.monotonic() - began, [d for s in subscribers for d in s.delays_ms]


def page_cost(
    setup: Setup, app: str, app_dir: Path, views: int, concurrency: int, expiry_s: float, stream: bool = True
) -> PageCost:
    """`views` page views of `app` on the setup's first worker, `concurrency` at a time, while STREAMING_SESSIONS
    sessions of the streaming app stream on it; the worker's CPU from the first view until every session they
    opened has expired and been cleaned up (measured: the CPU of an idle worker over the same wait is taken off)."""
    pid = setup.worker_pids()[0]
    before = _cpu_s(pid)
    done, seconds, delays = asyncio.run(_load(setup, app, views, concurrency, stream))
    time.sleep(expiry_s)  # the sessions expire and are discarded: that is part of what a page view costs
    loaded = _cpu_s(pid) - before
    idle_began = _cpu_s(pid)
    time.sleep(min(expiry_s, 5))  # what the idle worker spends meanwhile, per second
    idle_per_s = (_cpu_s(pid) - idle_began) / min(expiry_s, 5)
    worker_s = loaded - idle_per_s * expiry_s
    return PageCost(
        views=done,
        worker_cpu_ms=worker_s / max(done, 1) * 1000,
        floor=floor(app_dir, 20),
        views_per_s=done / seconds,
        stall_p99_ms=percentile(delays, 99),
        stall_max_ms=max(delays, default=float("nan")),
    )


def markdown(apps: dict[str, PageCost]) -> str:
    lines = [
        "### CPU per page view of each shipped app (bokeh-stack, one worker, 8 browsers at once)",
        "",
        "| app | the worker's CPU per page view | its build + serialization in plain Bokeh | ratio | page views/s |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {app} | {c.worker_cpu_ms:.1f} ms | {c.floor.cpu_ms:.1f} ms | {c.ratio:.2f}× | {c.views_per_s:.1f} |"
        for app, c in apps.items()
    ]
    return "\n".join(lines)


if __name__ == "__main__" and sys.argv[1:2] == ["--plain"]:
    print(json.dumps(_measure_floor(sys.argv[2], int(sys.argv[3]))))
