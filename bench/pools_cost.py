"""What pools that size themselves save and cost (docs/pools.md): the memory of a host serving many apps, each in
a pool of its own, with one worker each (fixed) and with none until a visitor comes (min_workers 0: scale to zero),
both idle; and the first page view of an idle app (held while its worker starts) against the first page view of an
app whose worker runs. Memory is the proportional set size (PSS) of supervisord and every process under it: nginx,
the workers, the programs beside them; shared pages counted once."""

from __future__ import annotations

import asyncio
import shutil
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench.setups import DEFAULTS, started
from harness.pageview import page_view

APPS = 20
# Apps whose first page view is measured, each a different idle app (or warm worker).
FIRST_VIEWS = 6
# Scale to zero must hold at most this much of the fixed pools' memory ...
MEMORY_MOST = 0.5
# ... and an idle app's first page view must come within nginx's page timeout: never an error.


@dataclass
class PoolsCost:
    apps: int
    fixed_mb: float = 0.0
    zero_mb: float = 0.0
    warm_s: list[float] = field(default_factory=list)
    cold_s: list[float] = field(default_factory=list)
    page_timeout_s: float = 0.0


def stack_memory_mb(run_dir: Path) -> float:
    """PSS of supervisord (its pid file in run_dir) and every process under it, in MB."""
    root = psutil.Process(int((run_dir / "supervisord.pid").read_text()))
    total = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            total += process.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total / 1e6


def first_views(url_of, names: list[str]) -> list[float]:
    """Seconds of one first-visit page view of each app, one after the other."""

    async def views() -> list[float]:
        return [(await page_view(url_of(f"/{name}"), timeout=120)).seconds for name in names]

    return asyncio.run(views())


def pools_cost(app: Path, directory: Path, session: dict, smoke: bool) -> PoolsCost:
    count = 3 if smoke else APPS
    names = [f"{app.name}{i:02d}" for i in range(count)]
    apps = directory / "pools-apps"
    for name in names:
        shutil.copytree(app, apps / name, ignore=shutil.ignore_patterns("__pycache__"))
    measured = names[: min(FIRST_VIEWS, count)]
    result = PoolsCost(apps=count)
    for zero in (False, True):
        size = {"min_workers": 0, "max_workers": 1} if zero else {"workers": 1}
        pools = {f"p{i:02d}": {"apps": [name], **size} for i, name in enumerate(names)}
        where = directory / ("pools-zero" if zero else "pools-fixed")
        with started("stack", apps, 1, where, session, settings={"pools": pools}) as setup:
            memory = stack_memory_mb(where / "run")
            seconds = first_views(setup.url, measured)
        if zero:
            result.zero_mb, result.cold_s = memory, seconds
        else:
            result.fixed_mb, result.warm_s = memory, seconds
    result.page_timeout_s = DEFAULTS.nginx.page_timeout_s
    return result


def markdown(cost: PoolsCost) -> str:
    return "\n".join([
        f"**Pools that size themselves**: a host serving {cost.apps} apps (the dashboard), each in a pool of its own, "
        "idle; then the first page view of an app, "
        f"{len(cost.cold_s)} apps one after the other.",
        "",
        "| | one worker each (fixed) | none until a visitor (`min_workers: 0`) |",
        "|---|---|---|",
        f"| host memory, idle (PSS of every process of the stack) | {cost.fixed_mb:,.0f} MB | "
        f"**{cost.zero_mb:,.0f} MB** ({cost.zero_mb / cost.fixed_mb:.0%}) |",
        f"| an app's first page view, p50 / max s | {statistics.median(cost.warm_s):.2f} / {max(cost.warm_s):.2f} | "
        f"{statistics.median(cost.cold_s):.2f} / {max(cost.cold_s):.2f} (a worker started for it) |",
    ])  # fmt: skip


def targets(cost: PoolsCost) -> list[tuple[str, str, bool | None]]:
    share = cost.zero_mb / cost.fixed_mb
    worst = max(cost.cold_s)
    return [
        (
            f"{cost.apps} idle apps scaled to zero: at most {MEMORY_MOST:.0%} of the memory",
            f"{share:.0%}",
            share <= MEMORY_MOST,
        ),
        (
            f"an idle app's first page view within nginx's page timeout ({cost.page_timeout_s:.0f} s)",
            f"{worst:.1f} s",
            worst < cost.page_timeout_s,
        ),
    ]
