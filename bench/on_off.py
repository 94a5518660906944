"""What a feature costs: bokeh-stack with it on and off, side by side in one run, alternating (on, off, off, on, ...)
so that a drift of this shared machine falls on both: page views/s, and the streaming sessions one worker
carries. The metrics part (setting ops.metrics) and the resume part (setting session.store) are such pairs."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from bench.pageviews import page_views
from bench.setups import started
from bench.streaming import capacity


@dataclass
class OnOff:
    feature: str  # as the table names it, e.g. "metrics"
    setting: str  # the setting that turns it off, e.g. "ops.metrics"
    rounds: int
    page_views_per_s: dict[bool, list[float]] = field(default_factory=lambda: {True: [], False: []})
    capacity_sessions: dict[bool, list[int]] = field(default_factory=lambda: {True: [], False: []})


def on_off_ratio(measured: dict[bool, list[float]]) -> float | None:
    """The mean of the rounds with a feature on over the mean of those with it off (None without both)."""
    on, off = statistics.mean(measured[True] or [0]), statistics.mean(measured[False] or [0])
    return on / off if off else None


def on_off(
    feature: str, setting: str, settings: dict[bool, dict], apps: Path, workers: int, directory: Path, session: dict,
    args, rounds: int,
) -> OnOff:  # fmt: skip
    """`settings[True]` and `settings[False]`: the bokeh-stack settings with the feature on and off."""
    result = OnOff(feature, setting, rounds)
    first, step, most = map(int, args.capacity.split(","))
    order = [on for i in range(rounds) for on in ((True, False) if i % 2 == 0 else (False, True))]
    for n, on in enumerate(order):
        name = f"{feature}-{'on' if on else 'off'}-{n}"
        given = dict(settings[on])
        session_given = {**session, **given.pop("session", {})}  # the setups take the session settings apart
        with started("stack", apps, workers, directory / f"{name}-views", session_given, given) as setup:
            views = page_views(setup, args.seconds, args.concurrency, True, args.warmup)
            result.page_views_per_s[on].append(views.per_s)
        # A fresh stack: the page views' sessions would expire during the ramp and skew it.
        with started("stack", apps, workers, directory / f"{name}-capacity", session_given, given) as setup:
            pid = setup.worker_pids()[0]
            cap = capacity(setup.worker_url("/streaming"), setup.origin, pid, first, step, most, args.capacity_seconds)
            result.capacity_sessions[on].append(cap.sessions)
    return result


def markdown(cost: OnOff) -> str:
    pv, cap = cost.page_views_per_s, cost.capacity_sessions
    pv_ratio, cap_ratio = on_off_ratio(pv), on_off_ratio(cap)

    def cells(values: list[float], fmt: str) -> str:
        return ", ".join(format(v, fmt) for v in values)

    return "\n".join([
        f"{cost.feature.capitalize()} on vs off (setting `{cost.setting}`), bokeh-stack, {cost.rounds} round(s) "
        "alternating:",
        "",
        f"| | {cost.feature} on | {cost.feature} off | on / off |",
        "|---|---|---|---|",
        f"| page views/s, keep-alive | {cells(pv[True], '.1f')} | {cells(pv[False], '.1f')} | "
        f"{'–' if pv_ratio is None else f'{pv_ratio:.3f}'} |",
        f"| sessions one worker carries at 10 Hz | {cells(cap[True], 'd')} | {cells(cap[False], 'd')} | "
        f"{'–' if cap_ratio is None else f'{cap_ratio:.3f}'} |",
    ])  # fmt: skip


def targets(cost: OnOff, least: float) -> list[tuple[str, str, bool | None]]:
    out = []
    for label, measured in (("page views/s", cost.page_views_per_s), ("streaming capacity", cost.capacity_sessions)):
        ratio = on_off_ratio(measured)
        if ratio is not None:
            out.append((f"{cost.feature} cost: {label} on / off ≥ {least}", f"{ratio:.3f}", ratio >= least))
    return out
