"""Worker pools: which apps each serves, how many workers it runs (a fixed number, or between min_workers and
max_workers: daemons/pools.py sizes it), when a worker is replaced (recycle), and the ports they take: one per
worker it may run, and one more for a replacement while a pool recycles. The default pool first, then each named
one on the next free range unless it sets base_port."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from bokeh_stack.config.checks import check_app_names

DEFAULT_POOL = "default"
_POOL_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Recycling:
    """When a worker is replaced (settings recycle; 0: that limit is off)."""

    max_rss_mb: int = 0
    max_age_h: int = 0
    max_sessions: int = 0

    @property
    def on(self) -> bool:
        return any(dataclasses.astuple(self))


RECYCLE_KEYS = tuple(f.name for f in dataclasses.fields(Recycling))


@dataclass(frozen=True)
class Pool:
    """Workers serving a set of apps: one supervisord program, one nginx upstream."""

    name: str
    apps: tuple[str, ...]
    base_port: int
    min_workers: int
    max_workers: int
    sessions_per_worker: int = 50
    idle_timeout_s: int = 300
    recycle: Recycling = field(default_factory=Recycling)

    @property
    def sizes_itself(self) -> bool:
        return self.min_workers < self.max_workers

    @property
    def managed(self) -> bool:
        """Its workers come and go while it runs (the pools program starts and stops them, and tells nginx)."""
        return self.sizes_itself or self.recycle.on

    @property
    def workers(self) -> int:
        """How many workers it starts with."""
        return self.min_workers

    @property
    def slots(self) -> int:
        """The worker processes supervisord knows for it (each with its port): the most it runs, and one for a
        replacement while it recycles, so that it never serves with fewer."""
        return self.max_workers + (1 if self.recycle.on else 0)

    @property
    def ports(self) -> range:
        return range(self.base_port, self.base_port + self.slots)

    @property
    def start_ports(self) -> range:
        """The workers it starts with."""
        return range(self.base_port, self.base_port + self.workers)

    @property
    def program(self) -> str:
        """The supervisord program and nginx upstream name."""
        return f"bokeh_{self.name}"

    def bounds(self) -> str:
        """`2` or `0..3`."""
        return str(self.min_workers) if not self.sizes_itself else f"{self.min_workers}..{self.max_workers}"


def build_pools(given: Any, apps: list[str], problems: list[str]) -> list[Pool]:
    """The default pool (every app no other pool takes) and each named pool (setting pools), with their ports."""
    assigned: dict[str, str] = {}
    named: list[tuple[str, tuple[str, ...], Any]] = []
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
        named.append((str(name), spec.apps, spec))

    rest = tuple(app for app in apps if app not in assigned)
    specs = ([(DEFAULT_POOL, rest, given)] if rest else []) + named
    pools: list[Pool] = []
    next_port = given.base_port
    for name, pool_apps, spec in specs:
        start = next_port if spec.base_port is None else spec.base_port
        pool = Pool(
            name=name,
            apps=tuple(sorted(pool_apps)),
            base_port=start,
            min_workers=spec.workers if spec.min_workers is None else spec.min_workers,
            max_workers=spec.workers if spec.max_workers is None else spec.max_workers,
            sessions_per_worker=spec.sessions_per_worker or given.sessions_per_worker,
            idle_timeout_s=spec.idle_timeout_s or given.idle_timeout_s,
            recycle=_recycling(given.recycle, None if spec is given else spec.recycle),
        )
        _check_sizing(pool, given, problems)
        pools.append(pool)
        next_port = max(next_port, start + pool.slots)
    return pools


def _recycling(top: Any, own: Any) -> Recycling:
    """The top-level recycle limits, with each one a pool gives in its own recycle instead."""
    given = own.model_fields_set if own is not None else set()
    return Recycling(**{key: getattr(own if key in given else top, key) for key in RECYCLE_KEYS})


def _check_sizing(pool: Pool, given: Any, problems: list[str]) -> None:
    where = "" if pool.name == DEFAULT_POOL else f"pools.{pool.name}."
    if pool.min_workers > pool.max_workers:
        problems.append(
            f"{where}min_workers ({pool.min_workers}) is more than {where}max_workers ({pool.max_workers}): "
            f"a pool runs between the two"
        )
    if pool.managed and (given.role != "all" or given.worker_hosts):
        problems.append(
            f"pool {pool.name} sizes itself or recycles its workers: that needs nginx and the workers on one host "
            f"(role all, no worker_hosts), where the pools program starts and stops workers and tells nginx; with "
            f"worker hosts or containers, size them as a whole (Compose --scale, Swarm replicas, Kubernetes HPA)"
        )
    if pool.managed and not given.ops.metrics:
        problems.append(
            f"pool {pool.name} sizes itself or recycles its workers: that needs ops.metrics (the workers count "
            f"their sessions and their memory for the pools program)"
        )


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
