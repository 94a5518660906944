"""The bench's results as one markdown table, the targets (PASS/MISS), the design's reference figures beside ours,
and a chart of the page-view rows drawn with Bokeh and photographed with Chromium."""

from __future__ import annotations

import datetime
import math
import os
import platform
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from bench import compression, large_data, metrics_cost, pagecost, pools_cost, resume_cost, signin_cost
from bench.large_data import LargeData
from bench.metrics_cost import MetricsCost
from bench.pools_cost import PoolsCost
from bench.resume_cost import ResumeCost
from bench.setups import SETUPS
from bench.signin_cost import SigninCost
from bokeh_stack.config.plan import find_nginx

LETTERS = {"single": "(a)", "num_procs": "(b)", "recipe": "(c)", "previous": "(d)", "stack": ""}
# The most a step of the capacity ramp may fall short of: the shipped app on one worker.
CAPACITY_TARGET = 500


@dataclass
class Results:
    workers: int
    concurrency: int
    setups: list[str]
    pageviews: dict = field(default_factory=dict)  # (setup, keep_alive) -> PageViewResult
    static: dict = field(default_factory=dict)  # setup -> StaticResult
    latency: dict = field(default_factory=dict)  # setup -> {"entry"|"direct": Delays}
    capacity: dict = field(default_factory=dict)  # ("single"|"stack", app) -> Capacity
    churn: dict = field(default_factory=dict)  # setup -> [ChurnPoint, ...]
    pagecost: dict = field(default_factory=dict)  # "single"|"stack" -> PageCost (one worker, the dashboard)
    pagecost_apps: dict = field(default_factory=dict)  # shipped app -> PageCost (bokeh-stack, one worker)
    compression: list = field(default_factory=list)  # [compression.Wire off, on]
    metrics: MetricsCost | None = None
    signin: SigninCost | None = None
    resume: ResumeCost | None = None
    large_data: LargeData | None = None
    pools: PoolsCost | None = None


def _figure(value: float, digits: int = 1) -> str:
    """A figure, or "–" where nothing was measured (no page view ended: nan)."""
    return "–" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _kb(n: int) -> str:
    return f"{n / 1000:,.0f} kB" if n >= 1000 else f"{n} B"


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _rows(r: Results) -> list[tuple[str, dict[str, str]]]:
    """(label, {setup: cell}) for every measured row."""
    rows: list[tuple[str, dict[str, str]]] = []

    def row(label: str, cell) -> None:
        cells = {key: cell(key) or None for key in r.setups}  # `k in d and …` gives False where unmeasured
        if any(c is not None for c in cells.values()):
            rows.append((label, {k: "–" if c is None else c for k, c in cells.items()}))

    def loading(result) -> str:
        return f"{result.loading_at_end} ({result.longest_wait_s:.1f} s)" if result.loading_at_end else "0"

    for keep_alive, mode in ((True, "keep-alive"), (False, "`Connection: close`")):
        pv = {k: r.pageviews.get((k, keep_alive)) for k in r.setups}
        row(f"**1. Page views**, {mode}: page views/s", lambda k, pv=pv: pv[k] and f"**{pv[k].per_s:.1f}**")
        row(
            f"… {mode}: p50 / p99 ms",
            lambda k, pv=pv: pv[k] and f"{_figure(pv[k].p50_ms, 0)} / {_figure(pv[k].p99_ms, 0)}",
        )
        row(f"… {mode}: app executions per page view", lambda k, pv=pv: pv[k] and _figure(pv[k].executions_per_view, 2))
        row(
            f"… {mode}: failed page views", lambda k, pv=pv: pv[k] and f"{pv[k].failed} of {pv[k].views + pv[k].failed}"
        )
        row(
            f"… {mode}: still loading when the window closed (the longest wait)",
            lambda k, pv=pv: pv[k] and loading(pv[k]),
        )
        row(f"… {mode}: the load generator's CPU (cores)", lambda k, pv=pv: pv[k] and f"{pv[k].client_cpu:.2f}")
    st = r.static
    row("**2. Static** `bokeh.min.js`: requests/s (wrk)", lambda k: k in st and f"**{st[k].per_s:,.0f}**")
    row("… requests/s asking for gzip", lambda k: k in st and f"{st[k].gzip_per_s:,.0f}")
    row(
        "… bytes on the wire with gzip",
        lambda k: k in st and f"{_kb(st[k].wire_bytes)} ({st[k].wire_bytes / st[k].raw_bytes:.0%})",
    )
    row("… a repeat visit downloads again (JS)", lambda k: k in st and f"{_kb(st[k].repeat_js_bytes)} ({st[k].cache})")
    lat = r.latency

    def delays(k: str, group: str) -> str | None:
        d = lat.get(k, {}).get(group)
        return d and f"{_figure(d.p50_ms)} / {_figure(d.p99_ms)}"

    row("**3. Streamed update delay**, p50 / p99 ms", lambda k: delays(k, "entry"))
    row("… direct to the workers, at the same time", lambda k: delays(k, "direct") or (k in lat and "(direct)"))
    cap = r.capacity
    same = {"num_procs": "(a)'s worker", "recipe": "(a)'s workers"}

    def carried(k: str) -> str | None:
        if (k, "streaming") not in cap:
            return same.get(k) if ("single", "streaming") in cap else None
        return f"{cap[k, 'streaming_naive'].sessions} / **{cap[k, 'streaming'].sessions}**"

    row("**4. Sessions one worker carries** at 10 Hz (≥ 95% delivered): naive app / shipped app", carried)
    ch = r.churn

    def rss(k: str) -> str | None:
        return k in ch and " / ".join(f"{p.rss_mb:.0f}" for p in ch[k])

    counts = " / ".join(str(p.sessions) for p in next(iter(ch.values()), []))
    row(f"**5. Worker RSS** (MB) after {counts} sessions", rss)
    row("… RSS last / first", lambda k: k in ch and f"{ch[k][-1].rss_mb / ch[k][0].rss_mb:.2f}×")
    row(
        "… left once expired: sessions / callbacks / documents",
        lambda k: k in ch and f"{ch[k][-1].left.sessions} / {ch[k][-1].left.callbacks} / {ch[k][-1].left.documents}",
    )
    pc = r.pagecost
    row(
        "**6. CPU per page view** (one worker, dashboard), ms / the page's build + serialization in plain Bokeh",
        lambda k: k in pc and f"**{pc[k].worker_cpu_ms:.0f}** / {pc[k].floor.cpu_ms:.0f} ({pc[k].ratio:.2f}×)",
    )
    row("… page views/s (8 at once, direct)", lambda k: k in pc and f"{pc[k].views_per_s:.1f}")
    row(
        f"… meanwhile, {pagecost.STREAMING_SESSIONS} streaming sessions' update delay p99 / max ms",
        lambda k: k in pc and f"{_figure(pc[k].stall_p99_ms)} / {_figure(pc[k].stall_max_ms)}",
    )
    return rows


def _targets(r: Results) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) for every target whose figures were measured."""
    out: list[tuple[str, str, bool | None]] = []
    pv = r.pageviews
    runs = [pv[("stack", ka)] for ka in (True, False) if ("stack", ka) in pv]
    if runs:
        per_view = [x.executions_per_view for x in runs]
        out.append(
            (
                "app executions per page view = 1.00",
                ", ".join(f"{v:.2f}" for v in per_view),
                all(round(v, 2) == 1.0 for v in per_view),
            )
        )
    for other, least in (("num_procs", 1.0), ("single", 1.7), ("previous", 1.0)):
        for keep_alive, mode in ((True, "keep-alive"), (False, "close")):
            ratio = _ratio(*(pv.get((k, keep_alive)) and pv[(k, keep_alive)].per_s for k in ("stack", other)))
            if ratio is not None:
                out.append((f"page views/s ≥ {least}× {LETTERS[other]}, {mode}", f"{ratio:.2f}×", ratio >= least))
    st = r.static
    if "stack" in st:
        ratio = _ratio(st["stack"].per_s, st["single"].per_s if "single" in st else None)
        if ratio is not None:
            out.append(("static: nginx ≥ 2.5× Bokeh's handler, requests/s", f"{ratio:.1f}×", ratio >= 2.5))
        share = st["stack"].wire_bytes / st["stack"].raw_bytes
        out.append(("static: gzip bytes on the wire ≤ 30% of raw", f"{share:.0%}", share <= 0.30))
        out.append(
            (
                "static: a repeat visit downloads no JS",
                _kb(st["stack"].repeat_js_bytes),
                st["stack"].repeat_js_bytes == 0,
            )
        )
    if {"entry", "direct"} <= set(r.latency.get("stack", {})):
        overhead = r.latency["stack"]["entry"].p99_ms - r.latency["stack"]["direct"].p99_ms
        out.append(("proxy p99 overhead on a streamed update ≤ 1 ms", f"{overhead:+.2f} ms", overhead <= 1.0))
    if r.pagecost_apps:
        worst = max(r.pagecost_apps.items(), key=lambda item: item[1].ratio)
        out.append(("each shipped app: CPU per page view ≤ 1.0× its plain build + serialization",
                    f"{worst[1].ratio:.2f}× ({worst[0]}, the most)", worst[1].ratio <= 1))  # fmt: skip
    cap = r.capacity
    if ("stack", "streaming") in cap:
        shipped = cap["stack", "streaming"].sessions
        out.append((f"sessions of the shipped streaming app one worker carries ≥ {CAPACITY_TARGET}", str(shipped),
                    shipped >= CAPACITY_TARGET))  # fmt: skip
    if ("stack", "streaming_naive") in cap and ("previous", "streaming_naive") in cap:
        now, before = cap["stack", "streaming_naive"].sessions, cap["previous", "streaming_naive"].sessions
        out.append(("the naive per-session app: sessions ≥ 1.0× (d)", f"{now} / {before}", now >= before))
    if "stack" in r.pagecost:
        pc = r.pagecost["stack"]
        out.append(
            ("CPU per page view ≤ 1.0× the page's plain build + serialization", f"{pc.ratio:.2f}×", pc.ratio <= 1)
        )
        out.append(
            (
                "while building pages: streamed update p99 ≤ 100 ms",
                f"{_figure(pc.stall_p99_ms)} ms",
                pc.stall_p99_ms <= 100,
            )
        )
        out.append(
            (
                "while building pages: streamed update max ≤ 300 ms",
                f"{_figure(pc.stall_max_ms)} ms",
                pc.stall_max_ms <= 300,
            )
        )
    if "stack" in r.churn:
        first, last = r.churn["stack"][0], r.churn["stack"][-1]
        growth = last.rss_mb / first.rss_mb
        out.append((f"RSS after {last.sessions} ≤ 1.10× after {first.sessions}", f"{growth:.2f}×", growth <= 1.10))
        left = last.left
        out.append(
            ("nothing left once sessions expire", f"{left.sessions} / {left.callbacks} / {left.documents}", left.clean)
        )
    if {("single", "streaming_naive"), ("stack", "streaming")} <= set(r.capacity):
        naive, ours = r.capacity["single", "streaming_naive"].sessions, r.capacity["stack", "streaming"].sessions
        ratio = _ratio(ours, naive)
        if ratio is not None:
            out.append(
                (
                    "streaming capacity ≥ 1.5× a naive app on plain Bokeh",
                    f"{ratio:.2f}× ({ours} / {naive})",
                    ratio >= 1.5,
                )
            )
    if r.metrics:
        out += metrics_cost.targets(r.metrics)
    if r.signin:
        out += signin_cost.targets(r.signin)
    if r.resume:
        out += resume_cost.targets(r.resume)
    if r.large_data:
        out += large_data.targets(r.large_data)
    if r.pools:
        out += pools_cost.targets(r.pools)
    return out


def _anchors(r: Results) -> list[tuple[str, str, str]]:
    """The design's measurements (design.md §2b) beside this run's."""
    pv, st, lat, cap = r.pageviews, r.static, r.latency, r.capacity

    def rate(key: str, keep_alive: bool) -> str | None:
        return (key, keep_alive) in pv and f"{pv[key, keep_alive].per_s:.0f}"

    rows = [
        ("one worker, page views/s", "~25", rate("single", True)),
        ("nginx over 2 workers, page views/s", "~47", rate("recipe", True)),
        (
            "`--num-procs 2`, page views/s, keep-alive / close",
            "~26 / 42",
            rate("num_procs", True) and f"{rate('num_procs', True)} / {rate('num_procs', False)}",
        ),
        (
            "`bokeh.min.js` requests/s, Bokeh / nginx",
            "701 / 1945",
            {"single", "recipe"} <= set(st) and f"{st['single'].per_s:.0f} / {st['recipe'].per_s:.0f}",
        ),
        (
            "streamed update via nginx, p50 / p99 ms",
            "~1.5 / ~3",
            "recipe" in lat and f"{_figure(lat['recipe']['entry'].p50_ms)} / {_figure(lat['recipe']['entry'].p99_ms)}",
        ),
        (
            "sessions a plain worker carries at 10 Hz, naive app",
            "~100-130",
            ("single", "streaming_naive") in cap and str(cap["single", "streaming_naive"].sessions),
        ),
    ]
    return [(a, b, c) for a, b, c in rows if c]


def markdown(r: Results) -> str:
    names = {k: f"{LETTERS[k]} {SETUPS[k]}".strip() for k in r.setups}
    names = {**names, "num_procs": f"(b) bokeh serve --num-procs {r.workers}"} if "num_procs" in names else names
    lines = [f"N = {r.workers} workers; page views by {r.concurrency} browsers at once.", ""]
    lines += ["| | " + " | ".join(names[k] for k in r.setups) + " |", "|---" * (len(r.setups) + 1) + "|"]
    lines += [f"| {label} | " + " | ".join(cells[k] for k in r.setups) + " |" for label, cells in _rows(r)]
    targets = _targets(r)
    if targets:
        lines += ["", "| target (bokeh-stack) | measured | |", "|---|---|---|"]
        lines += [f"| {t} | {m} | {'PASS' if ok else '**MISS**'} |" for t, m, ok in targets]
    if r.metrics:
        lines += ["", metrics_cost.markdown(r.metrics)]
    if r.signin:
        lines += ["", signin_cost.markdown(r.signin)]
    if r.resume:
        lines += ["", resume_cost.markdown(r.resume)]
    if r.pagecost_apps:
        lines += ["", pagecost.markdown(r.pagecost_apps)]
    if r.compression:
        lines += ["", compression.markdown(r.compression)]
    if r.large_data:
        lines += ["", large_data.markdown(r.large_data)]
    if r.pools:
        lines += ["", pools_cost.markdown(r.pools)]
    anchors = _anchors(r)
    if anchors:
        lines += ["", "| reference figure | design §2b | this run |", "|---|---|---|"]
        lines += [f"| {a} | {b} | {c} |" for a, b, c in anchors]
    return "\n".join(lines)


def _versions() -> str:
    import bokeh
    import tornado

    nginx = subprocess.run([find_nginx() or "nginx", "-v"], capture_output=True, text=True).stderr.strip()
    return f"Python {platform.python_version()}, Bokeh {bokeh.__version__}, Tornado {tornado.version}, {nginx}"


def document(r: Results, table: str, chart: Path | None, measured: dict[str, str]) -> str:
    """The report; `measured`: part -> the day and commit it was measured at (bench/parts.py)."""
    today = datetime.date.today().isoformat()
    parts = [
        "# Benchmarks",
        "",
        f"Written {today} on {platform.node() or 'this machine'}: {os.cpu_count()} cores "
        f"({platform.machine()}), {_versions()}. The load generator runs on the same cores. Produced by "
        "`make bench` (`python -m bench`); what each row measures and why is in [bench/README.md](../bench/README.md).",
        "",
        table,
    ]
    if measured:
        when = "; ".join(f"{part} {at}" for part, at in measured.items())
        parts += ["", f"Each part's setups were measured side by side in one run: {when}."]
    if chart:
        parts += ["", f"![page views/s and latency per deployment]({chart.name})"]
    if r.capacity:
        parts += ["", "### Streaming capacity, step by step", "", _capacity_steps(r)]
    return "\n".join(parts) + "\n"


def _capacity_steps(r: Results) -> str:
    lines = [
        "| worker, app | sessions | updates delivered | worker CPU | load generator CPU |",
        "|---|---|---|---|---|",
    ]
    for (key, app), result in r.capacity.items():
        for step in result.steps:
            lines.append(
                f"| {SETUPS[key]}, {app} | {step.sessions} | {step.delivered:.1%} | {step.worker_cpu:.2f} "
                f"| {step.client_cpu:.2f} |"
            )
    return "\n".join(lines)


def chart(r: Results, png: Path) -> Path | None:
    """Page views/s and p99 latency per deployment, drawn by Bokeh and saved as a PNG through Chromium."""
    if not r.pageviews:
        return None
    from bokeh.embed import file_html
    from bokeh.layouts import row
    from bokeh.models import ColumnDataSource, FactorRange
    from bokeh.plotting import figure
    from bokeh.resources import INLINE
    from bokeh.transform import factor_cmap

    modes = {True: "keep-alive", False: "Connection: close"}
    keys = [(k, ka) for k in r.setups for ka in (True, False) if (k, ka) in r.pageviews]
    factors = [(SETUPS[k], modes[ka]) for k, ka in keys]
    source = ColumnDataSource(
        data={
            "x": factors,
            "rate": [r.pageviews[key].per_s for key in keys],
            "p99": [r.pageviews[key].p99_ms for key in keys],
            "mode": [f[1] for f in factors],
        }
    )
    plots = []
    for column, title, unit in (
        ("rate", "Page views/s (higher is better)", "page views/s"),
        ("p99", "p99 page-view latency (lower is better)", "ms"),
    ):
        p = figure(x_range=FactorRange(*factors), height=380, width=620, title=title, toolbar_location=None)
        p.vbar(
            x="x",
            top=column,
            width=0.85,
            source=source,
            fill_color=factor_cmap("mode", ["#1f77b4", "#ff7f0e"], list(modes.values()), start=1, end=2),
        )
        p.yaxis.axis_label = unit
        p.y_range.start = 0
        p.xaxis.major_label_orientation = 1.0
        p.xgrid.grid_line_color = None
        plots.append(p)
    html = file_html(row(*plots), INLINE, "bokeh-stack benchmarks")
    with tempfile.TemporaryDirectory(prefix="bokeh-stack-chart-") as tmp:
        page = Path(tmp) / "chart.html"
        page.write_text(html)
        _screenshot(page, png)
    return png


def _screenshot(page: Path, png: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        try:
            tab = browser.new_page(viewport={"width": 1280, "height": 420})
            tab.goto(page.as_uri())
            # The document renders after load: wait until BokehJS says it is idle.
            tab.wait_for_function(
                "() => window.Bokeh && Bokeh.documents.length > 0 && Bokeh.documents[0].is_idle", timeout=30_000
            )
            tab.locator(".bk-Row, .bk-root, body").first.screenshot(path=str(png))
        finally:
            browser.close()
