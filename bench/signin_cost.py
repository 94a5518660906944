"""What sign-in costs a page view: bokeh-stack with auth.mode none and password side by side in one run,
alternating (none, password, password, none, ...) so that a drift of this shared machine falls on both. Signed
in, every page GET and every websocket open is one more request nginx makes, to the sign-in process
(`auth_request`); the browsers carry a sign-in cookie made once, at the start."""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench.on_off import on_off_ratio
from bench.pageviews import page_views
from bench.setups import started
from bokeh_stack.daemons.signin.gate import COOKIE
from harness.pageview import sign_in

USER, PASSWORD = "bench", "a bench passphrase"


@dataclass
class SigninCost:
    rounds: int
    per_s: dict[bool, list[float]] = field(default_factory=lambda: {True: [], False: []})
    p50_ms: dict[bool, list[float]] = field(default_factory=lambda: {True: [], False: []})
    failed: int = 0


def signin_cost(apps: Path, workers: int, directory: Path, session: dict, args, rounds: int) -> SigninCost:
    result = SigninCost(rounds)
    order = [on for i in range(rounds) for on in ((False, True) if i % 2 == 0 else (True, False))]
    for n, on in enumerate(order):
        name = f"signin-{'password' if on else 'none'}-{n}"
        settings = {"auth": {"mode": "password"}} if on else {}
        if on:
            add_user(directory / name / "run")
        with started("stack", apps, workers, directory / name, session, settings) as setup:
            cookie = asyncio.run(signed_in_cookie(setup.url(""))) if on else ""
            views = page_views(setup, args.seconds, args.concurrency, True, args.warmup, cookie=cookie)
        result.per_s[on].append(views.per_s)
        result.p50_ms[on].append(views.p50_ms)
        result.failed += views.failed
    return result


def add_user(runtime_dir: Path) -> None:
    command = [sys.executable, "-m", "bokeh_stack", "users", "add", USER, "--password-stdin"]
    subprocess.run(
        [*command, "--runtime-dir", str(runtime_dir)], input=PASSWORD + "\n", text=True, check=True, capture_output=True
    )


async def signed_in_cookie(base_url: str) -> str:
    status, jar, _ = await sign_in(base_url.rstrip("/"), USER, PASSWORD)
    if status != 303:
        raise RuntimeError(f"the bench could not sign in: HTTP {status}")
    return f"{COOKIE}={jar.cookies[COOKIE]}"


def markdown(cost: SigninCost) -> str:
    def cells(values: list[float]) -> str:
        return ", ".join(f"{v:.1f}" for v in values)

    per_s = on_off_ratio(cost.per_s)
    delta = statistics.mean(cost.p50_ms[True] or [0]) - statistics.mean(cost.p50_ms[False] or [0])
    return "\n".join([
        f"Sign-in on vs off (setting `auth.mode`), bokeh-stack, {cost.rounds} round(s) alternating:",
        "",
        "| | auth.mode password, signed in | auth.mode none | password / none |",
        "|---|---|---|---|",
        f"| page views/s, keep-alive | {cells(cost.per_s[True])} | {cells(cost.per_s[False])} | "
        f"{'–' if per_s is None else f'{per_s:.3f}'} |",
        f"| page view p50, ms | {cells(cost.p50_ms[True])} | {cells(cost.p50_ms[False])} | {delta:+.1f} ms |",
    ])  # fmt: skip


def targets(cost: SigninCost) -> list[tuple[str, str, bool | None]]:
    value = on_off_ratio(cost.per_s)
    return (
        [] if value is None else [("sign-in cost: page views/s signed in / none ≥ 0.9", f"{value:.3f}", value >= 0.9)]
    )
