"""Worker pools: which apps each serves, how many workers it runs, and the ports they take (the default pool first,
then each named one on the next free range unless it sets base_port)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from bokeh_stack.config.checks import check_app_names

DEFAULT_POOL = "default"
_POOL_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Pool:
    """Workers serving a set of apps: one supervisord program, one nginx upstream."""

    name: str
    apps: tuple[str, ...]
    workers: int
    base_port: int

    @property
    def ports(self) -> range:
        return range(self.base_port, self.base_port + self.workers)

    @property
    def program(self) -> str:
        """The supervisord program and nginx upstream name."""
        return f"bokeh_{self.name}"


def build_pools(given: Any, apps: list[str], problems: list[str]) -> list[Pool]:
    """The default pool (every app no other pool takes) and each named pool (setting pools), with their ports."""
    assigned: dict[str, str] = {}
    named: list[tuple[str, tuple[str, ...], int, int | None]] = []
    for name, spec in given.pools.items():
        if name == DEFAULT_POOL or not _POOL_NAME.match(str(name)):
            problems.append(f"pool name {name!r}: use lower-case letters, digits and '_', and not {DEFAULT_POOL!r}")
        for app in spec.apps:
            if not check_app_names(f"pools.{name}.apps", [app], apps, problems):
                continue
            if app in assigned:
                problems.append(f"app {app!r} is in two pools: {assigned[app]} and {name}")
            else:
                assigned[app] = name
        named.append((str(name), spec.apps, spec.workers, spec.base_port))

    rest = tuple(app for app in apps if app not in assigned)
    specs = ([(DEFAULT_POOL, rest, given.workers, given.base_port)] if rest else []) + named
    pools: list[Pool] = []
    next_port = given.base_port
    for name, pool_apps, workers, base_port in specs:
        start = next_port if base_port is None else base_port
        pools.append(Pool(name=name, apps=tuple(sorted(pool_apps)), workers=workers, base_port=start))
        next_port = max(next_port, start + workers)
    return pools


def check_port_clashes(owner: dict[int, str], pools: list[Pool], problems: list[str]) -> None:
    for pool in pools:
        if pool.ports.stop - 1 > 65535:
            problems.append(f"pool {pool.name}: ports {pool.ports.start}-{pool.ports.stop - 1} run past 65535")
            continue
        for p in pool.ports:
            if p in owner:
                problems.append(f"port {p} is used twice: by {owner[p]} and by pool {pool.name}'s workers")
                break
            owner[p] = f"pool {pool.name}'s workers"
