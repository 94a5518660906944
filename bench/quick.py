"""Quick figures for the serving stack, side by side in one run (not a test; the full comparison is issue 5).

    .venv/bin/python bench/quick.py [--workers 3] [--views 60]

Prints a markdown table: app executions per page view and how first visits spread over the workers (sequential
and 8 concurrent browsers), and the median page-view time through nginx against direct to a worker.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bokeh_stack.pageview import page_view  # noqa: E402
from tests.stack import counter_apps, executions_per_view, page_views, start_stack  # noqa: E402


async def median_view_ms(url: str, origin: str, count: int) -> float:
    times = []
    for _ in range(count):
        times.append((await page_view(url, origin=origin)).seconds * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--views", type=int, default=60)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bokeh-stack-bench-"))
    stack = start_stack(tmp, counter_apps(tmp / "apps", ["counter"]), workers=args.workers)
    try:
        url = stack.url("/counter")
        rows = []
        for label, concurrency in (("sequential", 1), ("8 concurrent", 8)):
            start = time.perf_counter()
            views = asyncio.run(page_views([url] * args.views, concurrency=concurrency))
            rate = len(views) / (time.perf_counter() - start)
            per_view, split = executions_per_view(stack.executions(), views)
            rows.append((label, per_view, sorted(split.values()), rate))
        origin = f"http://127.0.0.1:{stack.settings.port}"
        direct = f"http://127.0.0.1:{stack.settings.worker_ports[0]}/counter"
        via_nginx, to_worker = (asyncio.run(median_view_ms(u, origin, 30)) for u in (url, direct))
    finally:
        stack.stop()

    print(f"{args.workers} workers, {args.views} first-visit page views per row\n")
    print("| browsers | executions per page view | sessions per worker | page views/s |")
    print("| --- | --- | --- | --- |")
    for label, per_view, split, rate in rows:
        print(f"| {label} | {per_view:.2f} | {'/'.join(map(str, split))} | {rate:.1f} |")
    print("\n| page view (GET, websocket, pull), median of 30 | ms |")
    print("| --- | --- |")
    print(f"| through nginx | {via_nginx:.1f} |")
    print(f"| direct to a worker | {to_worker:.1f} |")


if __name__ == "__main__":
    main()
