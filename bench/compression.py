"""Row 7, websocket compression (settings session.compression), bokeh-stack against itself: one worker with it off,
then on, each serving `sessions` browsers that offer permessage-deflate (as browsers do) the shipped streaming app,
then one dashboard page view. Per streamed update: the bytes on the wire and the worker's CPU; per page view: the
document's bytes on the wire."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.clients import Subscriber
from bench.setups import started
from harness.pageview import open_page


@dataclass
class Wire:
    compression: bool
    update_bytes: float  # on the wire, per streamed update received
    update_cpu_us: float  # the worker's CPU per update sent
    document_bytes: int  # the dashboard's document, on the wire


async def _measure(setup, sessions: int, seconds: float, compression: bool) -> tuple[float, float, int]:
    worker = psutil.Process(setup.worker_pids()[0])
    url = setup.worker_url("/streaming")
    subscribers = [await Subscriber.connect(url, setup.origin, compression=compression) for _ in range(sessions)]
    try:
        await asyncio.sleep(1)
        updates, wire = sum(s.updates for s in subscribers), sum(s.view.wire_bytes for s in subscribers)
        cpu = sum(worker.cpu_times()[:2])
        await asyncio.sleep(seconds)
        cpu = sum(worker.cpu_times()[:2]) - cpu
        updates = sum(s.updates for s in subscribers) - updates
        wire = sum(s.view.wire_bytes for s in subscribers) - wire
    finally:
        for s in subscribers:
            s.close()
    page = await open_page(setup.worker_url("/dashboard"), origin=setup.origin, compression=compression)
    document = page.wire_bytes
    page.close()
    return wire / max(updates, 1), cpu / max(updates, 1) * 1e6, document


def compression_cost(apps: Path, tmp: Path, session: dict, sessions: int, seconds: float) -> list[Wire]:
    out = []
    for on in (False, True):
        with started("stack", apps, 1, tmp / f"compression-{on}", {**session, "compression": on}) as setup:
            time.sleep(1)
            update_bytes, cpu_us, document = asyncio.run(_measure(setup, sessions, seconds, True))
            out.append(Wire(on, update_bytes, cpu_us, document))
    return out


def markdown(rows: list[Wire]) -> str:
    lines = [
        "### Websocket compression (`session.compression`), one worker, browsers offering permessage-deflate",
        "",
        "| `session.compression` | a streamed update on the wire | the worker's CPU per update | the dashboard's "
        "document on the wire |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {'on' if r.compression else 'off'} | {r.update_bytes:,.0f} B | {r.update_cpu_us:,.0f} µs | "
        f"{r.document_bytes / 1000:,.1f} kB |"
        for r in rows
    ]
    return "\n".join(lines)
