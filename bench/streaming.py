"""Rows 3 and 4, streaming: the delay of a streamed update (through the entry vs direct to a worker, measured at the
same time), and how many sessions one worker carries at 10 Hz while it still delivers 95% of the updates."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import psutil

from bench.clients import Subscriber
from bench.pageviews import percentile
from bench.subscribers import SubscriberProcesses

UPDATES_PER_S = 10  # the streaming app's period: 100 ms
DELIVERED = 0.95
DELIVERY_S = 1.0  # an update that arrives later than this after its window ends counts as not delivered


@dataclass
class Delays:
    samples: int
    p50_ms: float
    p99_ms: float


def _delays(subscribers: list[Subscriber]) -> Delays:
    values = [d for s in subscribers for d in s.delays_ms]
    return Delays(len(values), percentile(values, 50), percentile(values, 99))


async def _latency(groups: dict[str, list[str]], origin: str, seconds: float) -> dict[str, Delays]:
    connected = {
        name: [await Subscriber.connect(url, origin, measure_delay=True) for url in urls]
        for name, urls in groups.items()
    }
    everyone = [s for group in connected.values() for s in group]
    try:
        await asyncio.sleep(1)  # the first updates ride on the connection's start: not counted
        for subscriber in everyone:
            subscriber.delays_ms.clear()
        await asyncio.sleep(seconds)
    finally:
        for subscriber in everyone:
            subscriber.close()
    return {name: _delays(group) for name, group in connected.items() if group}


def update_delays(groups: dict[str, list[str]], origin: str, seconds: float) -> dict[str, Delays]:
    """Delays of streamed updates, per group of session URLs, all connected at once: a group through the proxy
    and a group direct to the workers (as many on each) see the same load on the workers."""
    return asyncio.run(_latency(groups, origin, seconds))


@dataclass
class Step:
    sessions: int
    delivered: float  # updates received / updates due
    worker_cpu: float  # the worker's CPU, 1.0 = one core
    client_cpu: float  # the bench client's CPU, all its processes


@dataclass
class Capacity:
    sessions: int  # the most sessions at which >= 95% of updates arrived (0: not even the first step)
    steps: list[Step] = field(default_factory=list)


def capacity(url: str, origin: str, pid: int, start: int, step: int, most: int, seconds: float) -> Capacity:
    """Add sessions `step` at a time on one worker until fewer than 95% of the updates due arrive, in two windows in
    a row: of the updates due in a window, those the worker made in it (by their server time) and that arrived by
    DELIVERY_S after. (The sessions a step adds can set off one full garbage collection a little later, a pause of
    0.2-0.5 s that costs one window 5%, once; a worker that cannot keep up misses the next window too.)"""
    worker = psutil.Process(pid)
    result = Capacity(0)
    with SubscriberProcesses(url, origin) as clients:

        def window(sessions: int) -> Step:
            worker.cpu_percent()
            client_cpu, began = clients.cpu_seconds(), time.time()
            time.sleep(seconds)
            ended = time.time()
            cpu = worker.cpu_percent() / 100
            client = (clients.cpu_seconds() - client_cpu) / (ended - began)
            time.sleep(DELIVERY_S)
            made = clients.updates_made_between(began, ended)
            return Step(sessions, made / (sessions * UPDATES_PER_S * (ended - began)), cpu, client)

        for sessions in range(start, most + 1, step):
            clients.grow(sessions)
            time.sleep(2)  # let the new sessions' callbacks settle into their rhythm
            measured = window(sessions)
            if measured.delivered < DELIVERED:
                measured = window(sessions)
            result.steps.append(measured)
            if measured.delivered < DELIVERED:
                break
            result.sessions = sessions
    return result
