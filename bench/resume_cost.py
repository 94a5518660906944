"""What resuming costs (setting session.store, bench/on_off.py): page views/s and streaming capacity with sessions
kept and without; and how long tabs take to come back after their worker is killed, resumed (as their users left
them) or fresh (Bokeh's own: the app's defaults). Tabs of the dashboard are opened on one worker, each user moves
the slider and picks a shape, the worker is killed (SIGKILL), and every tab's websocket opens again through nginx
at once, with its token, as BokehJS does: the time is until each has pulled its document."""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from bokeh.models import Select, Slider

from bench import on_off
from bench.setups import started
from harness.pageview import connect_and_pull, open_page

# Resuming may cost at most this much of the page views and of the streaming capacity.
LEAST = 0.95
# A resumed tab may take at most this much longer than a fresh one to come back.
RECONNECT_MOST = 1.10
SETTINGS = {True: {}, False: {"session": {"store": "off"}}}


@dataclass
class ResumeCost:
    on_off: on_off.OnOff
    tabs: int = 0
    reconnect_ms: dict[bool, list[float]] = field(default_factory=lambda: {True: [], False: []})
    as_left: dict[bool, int] = field(default_factory=lambda: {True: 0, False: 0})  # tabs that came back as left

    def p50(self, on: bool) -> float:
        return statistics.median(self.reconnect_ms[on])


def resume_cost(apps: Path, workers: int, directory: Path, session: dict, args, rounds: int, tabs: int) -> ResumeCost:
    result = ResumeCost(on_off.on_off("resume", "session.store", SETTINGS, apps, workers, directory, session, args,
                                      rounds), tabs)  # fmt: skip
    order = [on for i in range(rounds) for on in ((True, False) if i % 2 == 0 else (False, True))]
    for n, on in enumerate(order):
        given = {**session, **SETTINGS[on].get("session", {})}
        with started("stack", apps, workers, directory / f"reconnect-{n}", given) as setup:
            times, as_left = asyncio.run(_reconnects(setup, tabs))
        result.reconnect_ms[on] += times
        result.as_left[on] += as_left
    return result


async def _reconnects(setup, tabs: int) -> tuple[list[float], int]:
    views = [await open_page(setup.worker_url("/dashboard"), origin=setup.origin, document_ready=True)
             for _ in range(tabs)]  # fmt: skip
    for i, view in enumerate(views):
        await view.change(view.document.select_one({"type": Slider}), value=2.5 + i / 10)
        await view.change(view.document.select_one({"type": Select}), value="square")
        await view.document_ready()  # written at once, with the changes before it
    await asyncio.sleep(0.5)  # the worker applies and records them (the DocumentReady at once) well within this
    os.kill(setup.worker_pids()[0], signal.SIGKILL)
    for view in views:
        view.close()

    async def reconnect(view) -> tuple[float, bool]:
        began = time.perf_counter()
        ws, _, doc = await connect_and_pull(setup.url("/dashboard"), view.token, {"Origin": setup.origin}, 30)
        elapsed = (time.perf_counter() - began) * 1000
        ws.close()
        slider = doc.select_one({"type": Slider}).value
        return elapsed, slider == view.document.select_one({"type": Slider}).value

    measured = await asyncio.gather(*(reconnect(view) for view in views))
    return [ms for ms, _ in measured], sum(left for _, left in measured)


def markdown(cost: ResumeCost) -> str:
    lines = [on_off.markdown(cost.on_off), ""]
    if cost.reconnect_ms[True] and cost.reconnect_ms[False]:
        lines += [
            f"{cost.tabs} tabs of the dashboard on one worker, each moved its slider and picked a shape; the worker "
            "is killed and they reconnect through nginx at once:",
            "",
            "| | resumed (session.store on) | fresh (off: Bokeh's own) |",
            "|---|---|---|",
            f"| reconnect until the document is pulled, p50 / max ms | {cost.p50(True):.0f} / "
            f"{max(cost.reconnect_ms[True]):.0f} | {cost.p50(False):.0f} / {max(cost.reconnect_ms[False]):.0f} |",
            f"| tabs as their users left them | {cost.as_left[True]} of {len(cost.reconnect_ms[True])} | "
            f"{cost.as_left[False]} of {len(cost.reconnect_ms[False])} |",
        ]
    return "\n".join(lines)


def targets(cost: ResumeCost) -> list[tuple[str, str, bool | None]]:
    out = on_off.targets(cost.on_off, LEAST)
    if cost.reconnect_ms[True] and cost.reconnect_ms[False]:
        ratio = cost.p50(True) / cost.p50(False)
        out.append((f"reconnect after kill -9, p50: resumed ≤ {RECONNECT_MOST}× fresh", f"{ratio:.2f}×",
                    ratio <= RECONNECT_MOST))  # fmt: skip
        every = cost.as_left[True] == len(cost.reconnect_ms[True])
        out.append(("every resumed tab as its user left it", f"{cost.as_left[True]}", every))
    return out
