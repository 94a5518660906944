"""What a pool's next step is, from what its workers carry: a pure decision, which the pools program
(daemons/pools.py) takes every few seconds and carries out. Posit Connect's pool semantics (MinProcesses,
MaxProcesses, MaxConnsPerProcess, IdleTimeout), with Bokeh's connected sessions as the connections:

- add a worker as soon as the connected sessions need more than the pool has at sessions_per_worker each (up to
  max_workers; at once as many as they need);
- remove one, the least used, once the pool has had a worker to spare for idle_timeout_s (down to min_workers; 0
  only with no session at all);
- replace a worker past a recycle limit, one at a time (a new worker first: the pool never serves with fewer).
An operator's `bokeh-stack scale POOL N` pins the pool at N until `scale POOL auto`; recycling goes on."""

from __future__ import annotations

import math
from dataclasses import dataclass

from bokeh_stack.config.handoff import ManagedPool

# A worker's memory is judged once it has run this long (a fresh worker loads the apps' modules), and never for
# memory it already had when first seen: a limit below a fresh worker's size would replace workers for ever.
RECYCLE_MIN_AGE_S = 10.0


@dataclass(frozen=True)
class Seen:
    """A serving worker as the last look saw it (None: not known, e.g. it did not answer its scrape)."""

    port: int
    sessions: int | None
    rss_mb: float | None
    age_s: float | None
    made: int | None
    first_rss_mb: float | None = None


@dataclass
class Sizing:
    """What a pool remembers between looks."""

    target: int = 0  # the workers it wants: as pinned, else as its sessions need (next_step keeps it)
    pinned: int | None = None
    spare_since: float | None = None


@dataclass(frozen=True)
class Step:
    kind: str  # add, remove, recycle
    why: str
    port: int | None = None  # remove, recycle: which worker
    reason: str = ""  # recycle: one of limits.RECYCLE_REASONS


def workers(count: int) -> str:
    return f"{count} worker" if count == 1 else f"{count} workers"


def needed(sessions: int, pool: ManagedPool) -> int:
    """Workers for `sessions` connected sessions, within the pool's bounds."""
    return max(pool.min_workers, min(pool.max_workers, math.ceil(sessions / pool.sessions_per_worker)))


def past_limit(limits: dict[str, int], w: Seen) -> tuple[str, str] | None:
    """(reason, why) for a worker past a recycle limit, else None."""
    if limits.get("max_age_h") and w.age_s is not None and w.age_s >= limits["max_age_h"] * 3600:
        return "age", f"up {w.age_s / 3600:.1f} h, max_age_h {limits['max_age_h']}"
    if limits.get("max_sessions") and w.made is not None and w.made >= limits["max_sessions"]:
        return "sessions", f"made {w.made} sessions, max_sessions {limits['max_sessions']}"
    limit = limits.get("max_rss_mb")
    if limit and w.rss_mb is not None and w.rss_mb > limit and (w.age_s or 0) >= RECYCLE_MIN_AGE_S:
        if w.first_rss_mb is not None and w.first_rss_mb > limit:
            return None  # it started above the limit: a new one would too
        return "rss", f"{w.rss_mb:.0f} MB resident, max_rss_mb {limit}"
    return None


def next_step(pool: ManagedPool, seen: list[Seen], sizing: Sizing, now: float) -> Step | None:
    """The pool's next step, or None. `seen`: its serving workers."""
    serving = len(seen)
    sessions = sum(w.sessions or 0 for w in seen)
    if sizing.pinned is not None:
        want = sizing.pinned
        because = "pinned by bokeh-stack scale"
    else:
        want = needed(sessions, pool)
        because = f"{sessions} sessions, {pool.sessions_per_worker} a worker"
    sizing.target = want
    if want > serving:
        sizing.spare_since = None
        return Step("add", f"{because}: {workers(want)}")
    if want < serving and sizing.pinned is None and any(w.sessions is None for w in seen):
        sizing.spare_since = None  # a worker too busy to answer is no idle one: a full idle_timeout_s of answers
    elif want < serving:
        if sizing.pinned is None and sizing.spare_since is None:
            sizing.spare_since = now
        if sizing.pinned is not None or now - sizing.spare_since >= pool.idle_timeout_s:  # type: ignore[operator]
            sizing.spare_since = now if serving - 1 > want else None
            victim = min(seen, key=lambda w: (past_limit(pool.recycle, w) is None, w.sessions or 0, -w.port))
            quiet = "" if sizing.pinned is not None else f" for {pool.idle_timeout_s} s"
            return Step("remove", f"{because}{quiet}: {workers(serving - 1)}", port=victim.port)
    else:
        sizing.spare_since = None
    for w in seen:
        past = past_limit(pool.recycle, w)
        if past:
            return Step("recycle", past[1], port=w.port, reason=past[0])
    return None
