"""Worker pools: which apps each serves, how many workers it runs, and the ports they take (the default pool first,
then each named one on the next free range unless it sets base_port)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bokeh_stack.config.checks import check_port

DEFAULT_POOL = "default"
POOL_KEYS = {"apps": list, "workers": int, "base_port": int}
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


def build_pools(raw: Mapping[str, Any], apps: list[str], problems: list[str]) -> list[Pool]:
    assigned: dict[str, str] = {}
    named: list[tuple[str, list[str], int, int | None]] = []
    if not isinstance(raw["pools"], dict):
        problems.append(f"pools must be a mapping of pool name to {{apps, workers}}, got {raw['pools']!r}")
        return []
    for name, spec in raw["pools"].items():
        if not isinstance(spec, dict):
            problems.append(f"pools.{name} must be a mapping with apps and workers, got {spec!r}")
            continue
        if name == DEFAULT_POOL or not _POOL_NAME.match(str(name)):
            problems.append(f"pool name {name!r}: use lower-case letters, digits and '_', and not {DEFAULT_POOL!r}")
        pool_apps, workers, base_port = spec.get("apps"), spec.get("workers", 1), spec.get("base_port")
        if not isinstance(pool_apps, list) or not pool_apps or not all(isinstance(a, str) for a in pool_apps):
            problems.append(f"pools.{name}.apps must be a non-empty list of app names")
            continue
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            problems.append(f"pools.{name}.workers must be a whole number of at least 1, got {workers!r}")
            continue
        if base_port is not None:
            if isinstance(base_port, bool) or not isinstance(base_port, int):
                problems.append(f"pools.{name}.base_port must be a whole number, got {base_port!r}")
                continue
            check_port(base_port, f"pools.{name}.base_port", problems)
        for app in pool_apps:
            if app not in apps:
                problems.append(f"pools.{name}.apps: no app {app!r} in apps_dir (apps: {', '.join(apps) or 'none'})")
            elif app in assigned:
                problems.append(f"app {app!r} is in two pools: {assigned[app]} and {name}")
            else:
                assigned[app] = name
        named.append((str(name), pool_apps, workers, base_port))

    rest = [app for app in apps if app not in assigned]
    specs = ([(DEFAULT_POOL, rest, raw["workers"], raw["base_port"])] if rest else []) + named
    pools: list[Pool] = []
    next_port = raw["base_port"]
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
