"""bokeh-stack against what a user would pick instead, side by side in one run: one `bokeh serve`, `bokeh serve
--num-procs N`, Bokeh's documented nginx recipe (least_conn over N workers), and bokeh-stack, all on loopback.

    .venv/bin/python -m bench                       # every part; writes docs/benchmarks.md and its chart
    .venv/bin/python -m bench static latency        # some parts only (printed; --out to write them)
    .venv/bin/python -m bench --smoke --out /tmp/b.md   # every part at a tiny size (the test suite does this)

Parts: pageviews, static, latency, capacity, churn, pagecost (CPU per page view against Bokeh's own build, and
stalls), compression (bokeh-stack with session.compression off vs on), metrics (bokeh-stack with its metrics on vs
off), signin (bokeh-stack with sign-in on vs off), resume (bokeh-stack keeping sessions to resume vs not, and tabs
coming back after a kill -9), largedata (10 million points decimated vs all sent, on bokeh-stack), pools (a host of
20 apps with a worker each vs none until a visitor, and an idle app's first page view). Prints one
markdown table, the targets (PASS/MISS) and the design's reference figures beside ours. A run with --out keeps
each part it measures beside its report (docs/benchmarks.parts.json) and measures only the parts not kept there
for the same code and options (bench/parts.py): a run that stops goes on from its last finished part.
Not a test: nothing here fails on a slow machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from bench import report
from bench.churn import churn
from bench.compression import compression_cost
from bench.large_data import large_data
from bench.metrics_cost import metrics_cost
from bench.pagecost import page_cost
from bench.pageviews import page_views
from bench.parts import ROOT, Parts
from bench.pools_cost import pools_cost
from bench.resume_cost import resume_cost
from bench.setups import DEFAULTS, PREVIOUS, SETUPS, apps_dir, has_commit, previous_checkout, started
from bench.signin_cost import signin_cost
from bench.static import static_js
from bench.streaming import capacity, update_delays

# One worker's streaming capacity: the app as first written (two sources streamed per tick), then as shipped (one).
CAPACITY_APPS = ("streaming_naive", "streaming")
# Each part, by the function that measures it: its module is the part's code (bench/parts.py).
PARTS = {
    "pageviews": page_views,
    "static": static_js,
    "latency": update_delays,
    "capacity": capacity,
    "churn": churn,
    "pagecost": page_cost,
    "compression": compression_cost,
    "metrics": metrics_cost,
    "signin": signin_cost,
    "resume": resume_cost,
    "largedata": large_data,
    "pools": pools_cost,
}
COMPRESSION_SESSIONS = 50
# The metrics part: rounds of on/off, and the fleet one /metrics scrape is timed on.
METRICS_ROUNDS = 2
SCRAPE_WORKERS = 8
# The resume part: the tabs that reconnect at once after their worker is killed.
RESUME_TABS = 8
# The shipped apps the bench serves (the rest are its own, in bench/apps).
SHIPPED_APPS = ("streaming", "lifecycle")
APPS = {
    "dashboard": ROOT / "bench" / "apps" / "dashboard",
    "streaming": ROOT / "apps" / "streaming",
    "streaming_naive": ROOT / "bench" / "apps" / "streaming_naive",
    "lifecycle": ROOT / "apps" / "lifecycle",
}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("parts", nargs="*", metavar="PART", help=f"any of {', '.join(PARTS)} (default: all)")
    parser.add_argument("--workers", type=int, default=2, help="N: workers, and --num-procs (default 2)")
    parser.add_argument("--previous", default=PREVIOUS, help=f"the commit the previous bokeh-stack runs ({PREVIOUS})")
    parser.add_argument("--setups", default=",".join(SETUPS), help=f"comma-separated, of {', '.join(SETUPS)}")
    parser.add_argument("--concurrency", type=int, default=8, help="browsers doing page views at once")
    parser.add_argument("--seconds", type=float, default=20, help="each page-view measurement (after --warmup)")
    parser.add_argument(
        "--warmup",
        type=float,
        default=25,
        help="page views before measuring: long enough for the "
        "first sessions to expire, so that their clean-up falls inside the measurement",
    )
    parser.add_argument("--static-seconds", type=float, default=10, help="each wrk run")
    parser.add_argument("--latency-seconds", type=float, default=30)
    parser.add_argument("--capacity", default="50,50,800", help="first,step,most sessions on one worker")
    parser.add_argument("--capacity-seconds", type=float, default=8, help="each capacity step")
    parser.add_argument("--churn", default="500,5000", help="sessions opened and closed before each measurement")
    parser.add_argument("--pagecost-views", type=int, default=300, help="page views whose CPU is measured (pagecost)")
    parser.add_argument(
        "--unused-ms",
        type=int,
        default=DEFAULTS.session.unused_lifetime_ms,
        help="unused-session lifetime, for every setup (default: bokeh-stack's)",
    )
    parser.add_argument("--smoke", action="store_true", help="every part at a tiny size, to check that it runs")
    parser.add_argument("--fresh", action="store_true", help="measure every part, also those kept for this code")
    parser.add_argument("--out", type=Path, help="markdown file to write (default: docs/benchmarks.md for a full run)")
    args = parser.parse_args(argv)
    args.parts = args.parts or list(PARTS)
    args.setups = args.setups.split(",")
    for given, known in ((args.parts, PARTS), (args.setups, SETUPS)):
        if unknown := set(given) - set(known):
            parser.error(f"unknown {', '.join(sorted(unknown))}: choose from {', '.join(known)}")
    if "previous" in args.setups and not has_commit(args.previous):
        missing = f"commit {args.previous} is not in this clone's history (a shallow clone?)"
        if "--setups" in " ".join(argv):
            parser.error(f"--setups previous: {missing}")
        print(f"bench: leaving out the previous bokeh-stack: {missing}", file=sys.stderr)
        args.setups.remove("previous")
    if args.smoke:
        args.seconds, args.warmup, args.static_seconds, args.latency_seconds = 2, 1, 1, 2
        args.capacity, args.capacity_seconds, args.churn, args.unused_ms = "2,2,4", 1, "4,8", 1000
        args.pagecost_views = 8
    if args.out is None and not args.smoke and set(args.parts) == set(PARTS) and set(args.setups) == set(SETUPS):
        args.out = ROOT / "docs" / "benchmarks.md"
    return args


def main(argv: list[str]) -> int:
    args = parse(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bokeh-stack-bench-"))
    if "previous" not in args.setups:
        return run(args, tmp, None)
    with previous_checkout(tmp / "previous", args.previous) as checkout:
        return run(args, tmp, checkout)


def run(args: argparse.Namespace, tmp: Path, checkout: Path | None) -> int:
    results = report.Results(workers=args.workers, concurrency=args.concurrency, setups=args.setups)
    apps = apps_dir(tmp / "apps", APPS)
    # The earlier bokeh-stack serves the shipped apps as they were then (the streaming app without a Feed).
    previous_apps = checkout and apps_dir(
        tmp / "apps-previous", {**APPS, **{name: checkout / "apps" / name for name in SHIPPED_APPS}}
    )
    check_unused_ms = min(DEFAULTS.session.check_unused_ms, args.unused_ms)
    session = {"unused_lifetime_ms": args.unused_ms, "check_unused_ms": check_unused_ms}
    expiry_s = (args.unused_ms + check_unused_ms) / 1000 + 1

    # A run measures only what the runs before it have not (bench/parts.py).
    options = {k: v for k, v in vars(args).items() if k not in ("parts", "out", "fresh")}
    modules = {part: measure.__module__ for part, measure in PARTS.items()}
    kept = Parts(args.out.with_name(f"{args.out.stem}.parts.json"), options, modules) if args.out else None

    def want(part: str) -> bool:
        return part in args.parts and not (kept and not args.fresh and kept.restore(part, results))

    def done(part: str) -> None:
        if kept:
            kept.save(part, results)

    def start(key: str, name: str, workers: int = args.workers):
        print(f"  {SETUPS[key]}: {name}", file=sys.stderr, flush=True)
        served = previous_apps if key == "previous" else apps
        return started(key, served, workers, tmp / f"{key}-{name}", session, checkout=checkout)

    if want("pageviews"):
        print("page views", file=sys.stderr)
        for key in args.setups:
            for keep_alive in (True, False):
                with start(key, "keep-alive" if keep_alive else "close") as setup:
                    results.pageviews[key, keep_alive] = page_views(
                        setup, args.seconds, args.concurrency, keep_alive, args.warmup
                    )
        done("pageviews")
    if want("static"):
        print("static", file=sys.stderr)
        for key in args.setups:
            with start(key, "static") as setup:
                results.static[key] = static_js(setup, args.static_seconds)
        done("static")
    if want("latency"):
        print("streamed update delay", file=sys.stderr)
        for key in args.setups:
            with start(key, "latency") as setup:
                n = len(setup.worker_ports)
                groups = {"entry": [setup.url("/streaming")] * 2 * args.workers}
                if key in ("recipe", "previous", "stack"):
                    groups["direct"] = [setup.worker_url("/streaming", i % n) for i in range(2 * args.workers)]
                results.latency[key] = update_delays(groups, setup.origin, args.latency_seconds)
        done("latency")
    if want("capacity"):
        print("streaming capacity of one worker", file=sys.stderr)
        first, step, most = map(int, args.capacity.split(","))
        for key in ("single", "previous", "stack"):
            for app in CAPACITY_APPS if key in args.setups else ():
                # A fresh worker per app: the sessions of the app before would expire during this ramp, and plain
                # Bokeh's discards (one full collection each) would stall the worker for seconds.
                with start(key, f"capacity-{app}") as setup:
                    pid = setup.worker_pids()[0]
                    results.capacity[key, app] = capacity(
                        setup.worker_url(f"/{app}"), setup.origin, pid, first, step, most, args.capacity_seconds
                    )
        done("capacity")
    if want("churn"):
        print("session churn", file=sys.stderr)
        counts = [int(c) for c in args.churn.split(",")]
        for key in args.setups:
            with start(key, "churn") as setup:
                results.churn[key] = churn(setup, counts, args.concurrency, expiry_s)
        done("churn")

    if want("pagecost"):
        print("CPU per page view, and stalls", file=sys.stderr)
        for key in ("single", "previous", "stack"):
            if key in args.setups:
                with start(key, "pagecost", workers=1) as setup:
                    results.pagecost[key] = page_cost(
                        setup, "dashboard", APPS["dashboard"], args.pagecost_views, args.concurrency, expiry_s
                    )
        if "stack" in args.setups:  # and each shipped app on its own, against its own floor
            print("  bokeh-stack: pagecost of each shipped app", file=sys.stderr, flush=True)
            shipped = ROOT / "apps"
            with started("stack", shipped, 1, tmp / "stack-pagecost-apps", session) as setup:
                measured = (
                    ["streaming"]
                    if args.smoke
                    else sorted(p.name for p in shipped.iterdir() if (p / "main.py").exists())
                )
                for app in measured:
                    results.pagecost_apps[app] = page_cost(
                        setup, app, shipped / app, args.pagecost_views // 4, args.concurrency, expiry_s, stream=False
                    )
        done("pagecost")

    if want("compression") and "stack" in args.setups:
        print("websocket compression off vs on", file=sys.stderr)
        sessions = 2 if args.smoke else COMPRESSION_SESSIONS
        results.compression = compression_cost(apps, tmp, session, sessions, args.latency_seconds)
        done("compression")

    if want("metrics") and "stack" in args.setups:
        print("metrics on vs off", file=sys.stderr)
        rounds, fleet = (1, 2) if args.smoke else (METRICS_ROUNDS, SCRAPE_WORKERS)
        results.metrics = metrics_cost(apps, args.workers, tmp, session, args, rounds, fleet)
        done("metrics")

    if want("signin") and "stack" in args.setups:
        print("sign-in on vs off", file=sys.stderr)
        results.signin = signin_cost(apps, args.workers, tmp, session, args, 1 if args.smoke else METRICS_ROUNDS)
        done("signin")

    if want("resume") and "stack" in args.setups:
        print("resume on vs off", file=sys.stderr)
        rounds, tabs = (1, 2) if args.smoke else (METRICS_ROUNDS, RESUME_TABS)
        results.resume = resume_cost(apps, args.workers, tmp, session, args, rounds, tabs)
        done("resume")

    if want("largedata") and "stack" in args.setups:
        print("very large data", file=sys.stderr)
        results.large_data = large_data(tmp, session, args.smoke)
        done("largedata")

    if want("pools") and "stack" in args.setups:
        print("pools: fixed vs scale to zero", file=sys.stderr)
        results.pools = pools_cost(APPS["dashboard"], tmp, session, args.smoke)
        done("pools")

    text = report.markdown(results)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        chart = report.chart(results, args.out.with_suffix(".png"))
        args.out.write_text(report.document(results, text, chart, kept.measured if kept else {}))
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
