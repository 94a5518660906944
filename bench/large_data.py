"""Very large data: the shipped large_data app (a min/max decimation of the visible window, sent after each pan or
zoom) side by side with a naive app that puts all the points in its source (bench/apps/large_data_naive), both
served by one bokeh-stack worker. Per app: the first document's bytes and page-view time, the bytes and delay of
each update over a scripted zoom sequence (in to raw samples, and back out), and the worker's RSS with 20 sessions
open."""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from bokeh.events import RangesUpdate

from bench.setups import apps_dir, started
from harness.pageview import PageView, PageViewError, open_page

ROOT = Path(__file__).resolve().parent.parent
# Each served alone by its own stack, so that a worker's RSS is one app's; the naive app imports the shipped
# app's series module from the workers' python_path.
APPS = {"large_data": ROOT / "apps" / "large_data", "large_data_naive": ROOT / "bench" / "apps" / "large_data_naive"}
POINTS_ENV = "LARGE_DATA_POINTS"  # apps/large_data/decimation.py reads it
POINTS = 10_000_000
SMOKE_POINTS = 200_000
SESSIONS = 20
ZOOM_STEPS = 14  # halvings of the window: 10,000 s down to 0.6 s (raw samples), then back out


@dataclass
class LargeData:
    points: int
    first_bytes: dict[str, int] = field(default_factory=dict)
    first_ms: dict[str, float] = field(default_factory=dict)
    update_bytes: dict[str, list[int]] = field(default_factory=dict)
    update_ms: dict[str, list[float]] = field(default_factory=dict)
    rss_mb: dict[str, float] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # app -> why its first page view failed


class ZoomDone(RangesUpdate):
    """A plot's RangesUpdate as BokehJS sends it (Bokeh's Python class only receives it: it sends no x0 ... y1)."""

    def event_values(self) -> dict:
        return {**super().event_values(), "x0": self.x0, "x1": self.x1, "y0": self.y0, "y1": self.y1}


def zoom_sequence(span: float) -> list[tuple[float, float]]:
    centre = span * 0.37
    widths = [span / 2**k for k in range(1, ZOOM_STEPS + 1)]
    widths += widths[-2::-1] + [span]
    return [(max(centre - w / 2, 0.0), min(centre + w / 2, span)) for w in widths]


async def _zoom(view: PageView, x0: float, x1: float) -> tuple[int, float] | None:
    """Announce a zoom as BokehJS does and wait for the new window; (bytes, ms), or None if nothing came."""
    [plot] = [root for root in view.document.roots if hasattr(root, "x_range")]
    before, start = view.received_bytes, time.perf_counter()
    await view.send_event(ZoomDone(plot, x0=x0, x1=x1, y0=0, y1=1))
    try:
        while True:
            message = await view.next_message(timeout=5)
            events = message.content.get("events", []) if message.msgtype == "PATCH-DOC" else []
            if any(e.get("attr") == "data" for e in events):
                return view.received_bytes - before, (time.perf_counter() - start) * 1000
    except TimeoutError:
        return None


async def _measure(url: str, origin: str, pid: int, span: float, result: LargeData, app: str) -> None:
    try:
        first = await open_page(url, origin=origin, timeout=300)
    except PageViewError as e:  # the naive app's document can be more than a worker sends before it is cut off
        result.failed[app] = str(e)
        return
    result.first_bytes[app], result.first_ms[app] = first.received_bytes, first.seconds * 1000
    updates = [await _zoom(first, x0, x1) for x0, x1 in zoom_sequence(span)]
    done = [u for u in updates if u is not None]
    result.update_bytes[app] = [b for b, _ in done]
    result.update_ms[app] = [ms for _, ms in done]
    views = [first] + [await open_page(url, origin=origin, timeout=300) for _ in range(SESSIONS - 1)]
    result.rss_mb[app] = psutil.Process(pid).memory_info().rss / 2**20
    for view in views:
        view.close()


def large_data(directory: Path, session: dict, smoke: bool) -> LargeData:
    points = SMOKE_POINTS if smoke else POINTS
    result = LargeData(points)
    os.environ[POINTS_ENV] = str(points)  # the stack's workers inherit it
    settings = {"python_path": [str(APPS["large_data"])]}
    try:
        for app, source in APPS.items():
            apps = apps_dir(directory / f"{app}-apps", {app: source})
            with started("stack", apps, 1, directory / f"large-{app}", session, settings) as setup:
                asyncio.run(
                    _measure(setup.url(f"/{app}"), setup.origin, setup.worker_pids()[0], points * 0.001, result, app)
                )
    finally:
        os.environ.pop(POINTS_ENV, None)
    return result


def _p(values: list[float], q: int) -> str:
    if len(values) < 2:
        return f"{values[0]:.1f}" if values else "–"
    return f"{statistics.quantiles(values, n=100, method='inclusive')[q - 1]:.1f}"


def markdown(r: LargeData) -> str:
    shipped, naive = APPS  # the keys

    def cells(fmt) -> str:
        return " | ".join(fmt(app) for app in APPS)

    def mb(n: int | None) -> str:
        return "–" if n is None else f"{n / 2**20:,.2f} MB" if n >= 2**20 else f"{n / 1024:,.1f} kB"

    def per_update(app: str) -> str:
        sizes = r.update_bytes.get(app) or []
        if app in r.failed:
            return "–"
        if not sizes:
            return "none: the browser has every point"
        return f"{mb(int(statistics.mean(sizes)))} ({len(sizes)} updates)"

    def first_ms(app: str) -> str:
        if app in r.failed:
            return f"failed: {r.failed[app]}"
        return f"{r.first_ms[app]:,.0f}" if app in r.first_ms else "–"

    def delays(app: str) -> str:
        ms = r.update_ms.get(app, [])
        return f"{_p(ms, 50)} / {_p(ms, 95)}"

    return "\n".join([
        f"Very large data: {r.points:,} points, one bokeh-stack worker per app; {len(zoom_sequence(1.0))} "
        f"scripted zooms; RSS with {SESSIONS} sessions open:",
        "",
        f"| | `{shipped}` (decimated) | `{naive}` (every point in the source) |",
        "|---|---|---|",
        f"| first document | {cells(lambda a: mb(r.first_bytes.get(a)))} |",
        f"| first page view, ms | {cells(first_ms)} |",
        f"| bytes per update | {cells(per_update)} |",
        f"| update delay p50 / p95, ms | {cells(delays)} |",
        f"| worker RSS, {SESSIONS} sessions | {cells(lambda a: f'{r.rss_mb[a]:,.0f} MB' if a in r.rss_mb else '–')} |",
    ])  # fmt: skip


def targets(r: LargeData) -> list[tuple[str, str, bool | None]]:
    shipped = next(iter(APPS))
    if shipped not in r.first_bytes:
        return []
    first = r.first_bytes[shipped]
    return [("large data: first document < 2 MB", f"{first / 2**20:.2f} MB", first < 2 * 2**20)]
