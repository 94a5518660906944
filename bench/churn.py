"""Row 5, memory under session churn: page views of the lifecycle app (DocumentReady sent, so each session's
update callback runs), closed at once; once the sessions have expired, the workers' RSS and what the lifecycle
app counts left alive (sessions, update callbacks, documents in memory)."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass

import psutil

from bench.setups import Setup
from harness.pageview import page_view

_CENSUS = re.compile(r"pid (\d+)\): (\d+) sessions?, (\d+) live update callbacks?, (\d+) documents? in memory")


@dataclass
class Census:
    sessions: int
    callbacks: int
    documents: int

    @property
    def clean(self) -> bool:
        return not (self.sessions or self.callbacks or self.documents)


@dataclass
class ChurnPoint:
    sessions: int  # opened and closed so far
    rss_mb: float  # the largest worker's RSS
    left: Census  # summed over the workers


async def _census_of(url: str, origin: str) -> tuple[int, Census]:
    view = await page_view(f"{url}?census", origin=origin)
    text = view.document.select_one({"css_classes": ["lifecycle-stats"]}).text
    pid, sessions, callbacks, documents = map(int, _CENSUS.search(text).groups())
    return pid, Census(sessions, callbacks, documents)


async def census(setup: Setup) -> Census:
    """What the workers hold, summed. `bokeh serve --num-procs` has one port: ask it until every child answered."""
    pids = set(setup.worker_pids())
    answers: dict[int, Census] = {}
    for attempt in range(10 * len(pids)):
        pid, counts = await _census_of(setup.worker_url("/lifecycle", attempt % len(setup.worker_ports)), setup.origin)
        answers.setdefault(pid, counts)
        if set(answers) >= pids:
            break
    return Census(*(sum(getattr(c, f) for c in answers.values()) for f in ("sessions", "callbacks", "documents")))


async def _open_and_close(setup: Setup, count: int, concurrency: int) -> None:
    url = setup.url("/lifecycle")
    limit = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with limit:
            await page_view(url, origin=setup.origin, document_ready=True, timeout=60)

    await asyncio.gather(*(one() for _ in range(count)))


def rss_mb(pids: list[int]) -> float:
    return max(psutil.Process(pid).memory_info().rss for pid in pids) / 2**20


def churn(setup: Setup, counts: list[int], concurrency: int, expiry_s: float, rounds: int = 3) -> list[ChurnPoint]:
    """Open and close sessions up to each of `counts` in turn; after each, let them expire (`expiry_s`: the unused
    lifetime plus one check, so the census's own session of the round before has expired too), count what is
    left, and again (at most `rounds` times) while anything is."""
    points, done = [], 0
    for count in counts:
        asyncio.run(_open_and_close(setup, count - done, concurrency))
        done = count
        for _ in range(rounds):
            time.sleep(expiry_s)
            left = asyncio.run(census(setup))
            if left.clean:
                break
        points.append(ChurnPoint(done, rss_mb(setup.worker_pids()), left))
    return points
