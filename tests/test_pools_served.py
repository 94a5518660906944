"""Pools at work on a real stack: a pool grows with its connected sessions and shrinks when they go, a pool with
min_workers 0 holds no worker until its first visitor, a leaking worker is replaced, an operator holds a pool at a
size; page views go on through every step, and nginx and the other workers are never restarted."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tornado.httpclient import AsyncHTTPClient

from harness.pageview import PageView, connect_and_pull, open_page, page_origin
from harness.stack import TEST_APPS, counter_apps, fetch, stream_of_page_views

pytestmark = pytest.mark.stack

STEP_TIMEOUT_S = 60


async def metrics(stack) -> dict[tuple[str, tuple], float]:
    """/metrics as {(name, sorted labels): value}."""
    response = await AsyncHTTPClient().fetch(stack.ops_url("/metrics"), raise_error=False)
    assert response.code == 200, response.body
    families = text_string_to_metric_families(response.body.decode())
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


async def pool_workers(stack, pool: str = "default") -> float:
    return (await metrics(stack))["bokeh_stack_pool_workers", (("pool", pool),)]


async def until(check: Callable[[], Awaitable[Any]], timeout: float, what: str) -> float:
    """Seconds until `check` is true; fails the test after `timeout`."""
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > timeout:
            pytest.fail(f"not within {timeout:.0f} s: {what}")
        await asyncio.sleep(0.25)
    return time.monotonic() - start


def cli(stack, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "bokeh_stack", *args, "--settings", str(stack.settings_file)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def status(stack) -> dict[str, Any]:
    shown = cli(stack, "status", "--json")
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


def only_the_pools_steps(stack) -> None:
    """Every worker supervisord started or stopped, it did for a step of the pools program (its log: `+PORT`,
    `-PORT`), and nginx was started once: nothing else was restarted."""
    said = (stack.settings.log_dir / "supervisord.log").read_text()
    steps = (stack.settings.log_dir / "bokeh_stack_pools.log").read_text()
    assert said.count("spawned: 'nginx'") == 1
    for port in {int(p) for p in re.findall(r"'bokeh_\w+_(\d+)'", said)}:
        spawned = len(re.findall(rf"spawned: 'bokeh_\w+_{port}'", said))
        stopped = len(re.findall(rf"stopped: bokeh_\w+_{port} ", said))
        assert (spawned, stopped) == (steps.count(f"+{port}"), steps.count(f"-{port}")), (port, steps)


def test_a_pool_grows_with_its_sessions_and_shrinks_when_they_go(stacks, tmp_path):
    """The issue's case: 10 held sessions at 4 a worker take a 1..3 pool to 3, and idle takes it back to 1."""
    stack = stacks(
        counter_apps(tmp_path / "apps", ["counter"]), workers=1, max_workers=3, sessions_per_worker=4, idle_timeout_s=8
    )
    url = stack.url("/counter")

    async def scenario() -> tuple[float, float, Any]:
        stop = asyncio.Event()
        load = asyncio.create_task(stream_of_page_views(url, 600, concurrency=2, stop=stop))
        held: list[PageView] = [await open_page(url) for _ in range(10)]
        grown = await until(lambda: _equals(pool_workers(stack), 3), STEP_TIMEOUT_S, "3 workers for 10 sessions")
        for view in held:
            view.close()
        shrunk = await until(lambda: logged(stack, SHRUNK_TO_1), 3 * STEP_TIMEOUT_S, "back to 1 when idle")
        stop.set()
        return grown, shrunk, await load

    grown, shrunk, stream = asyncio.run(scenario())
    print(f"\n1..3 pool, 10 held sessions at 4 a worker: 3 workers after {grown:.1f} s, 1 again {shrunk:.1f} s after "
          f"they closed (idle_timeout_s 8, two steps); meanwhile {stream}")  # fmt: skip
    assert stream.failures == [], stream.failures[:3]
    only_the_pools_steps(stack)
    log = (stack.settings.log_dir / "bokeh_stack_pools.log").read_text()
    assert re.search(r"\+\d+ in [\d.]+ s \(\d+ sessions, 4 a worker: 3 workers\): 3 serving", log), log
    assert asyncio.run(pool_workers(stack)) == 1
    shown = status(stack)["pools"]["default"]
    assert (shown["bounds"], shown["serving"], shown["target"]) == ("1..3", 1, 1)
    assert any("+" in text for _, text in shown["events"]), shown

    async def on_ops() -> bool:  # the /ops dashboard (its samples are 5 s apart)
        view = await open_page(stack.ops_url("/ops"))
        view.close()
        said = view.document.select_one({"name": "ops_pools"}).text
        return "<b>pool default</b>: 1 serving (1..3, target 1)" in said and "serving</li>" in said

    asyncio.run(until(on_ops, 30, "/ops to show the pool and its last steps"))


async def _equals(value: Awaitable[float], wanted: float) -> bool:
    return await value == wanted


SHRUNK_TO_1 = r"-\d+ \(\d+ sessions, 4 a worker for 8 s: 1 worker\): 1 serving"


async def logged(stack, pattern: str) -> bool:
    """The pools program's log has a line like `pattern` (a step is logged once it is done)."""
    return re.search(pattern, (stack.settings.log_dir / "bokeh_stack_pools.log").read_text()) is not None


def test_a_pool_with_min_workers_0_holds_no_worker_until_a_visitor_comes(stacks, tmp_path):
    apps = counter_apps(tmp_path / "apps", ["counter", "other"])
    stack = stacks(
        apps, workers=1, pools={"cold": {"apps": ["counter"], "min_workers": 0, "max_workers": 2, "idle_timeout_s": 5}}
    )
    cold = [w for w in status(stack)["workers"] if w["pool"] == "cold"]
    assert cold == [], "no worker of the pool runs"
    index = fetch(stack.url("/"))
    assert index.code == 200 and b'href="/counter"' in index.body, "the index lists the app of the idle pool"
    for path in ("/healthz", "/healthz/cold"):
        health = fetch(stack.url(path))
        assert health.code == 200, f"{path}: the idle pool is well (and its probe does not wake it)"
    assert [w for w in status(stack)["workers"] if w["pool"] == "cold"] == []

    async def cold_starts() -> tuple[float, list[float], float]:
        first = await open_page(stack.url("/counter"))
        first.close()
        back_to_zero = await until(lambda: _equals(pool_workers(stack, "cold"), 0), STEP_TIMEOUT_S, "idle: 0 again")
        crowd = await asyncio.gather(*(open_page(stack.url("/counter")) for _ in range(5)))
        for view in crowd:
            view.close()
        return first.seconds, [v.seconds for v in crowd], back_to_zero

    first, crowd, idle = asyncio.run(cold_starts())
    print(f"\nmin_workers 0: first page view {first:.2f} s (a worker started for it); 0 workers again {idle:.1f} s "
          f"after it closed; 5 visitors at once to the idle pool: slowest {max(crowd):.2f} s")  # fmt: skip
    assert first < cold_page_bound(stack) and max(crowd) < cold_page_bound(stack)

    # An operator holds it at 2 (its most), and lets it size itself again.
    held = cli(stack, "scale", "cold", "2")
    assert held.returncode == 0 and "2 serving, held at 2" in held.stdout, held.stdout + held.stderr
    assert asyncio.run(pool_workers(stack, "cold")) == 2
    assert status(stack)["pools"]["cold"]["pinned"] is True
    outside = cli(stack, "scale", "cold", "3")
    assert outside.returncode == 1 and "pool cold runs 0..2 workers: 3 is outside" in outside.stderr, outside.stderr
    fixed = cli(stack, "scale", "default", "2")
    assert fixed.returncode == 1 and "pool default has a fixed size (workers: 1)" in fixed.stderr, fixed.stderr
    assert cli(stack, "scale", "cold", "auto").returncode == 0
    asyncio.run(until(lambda: _equals(pool_workers(stack, "cold"), 0), 2 * STEP_TIMEOUT_S, "idle again: 0"))

    # A tab open while an operator puts its pool to sleep: its websocket, opened again as BokehJS does, meets the
    # waiting room, which starts a worker for it and hands it on.
    async def a_tab_through_sleep() -> Any:
        view = await open_page(stack.url("/counter"))
        slept = await asyncio.to_thread(cli, stack, "scale", "cold", "0")
        assert slept.returncode == 0 and await pool_workers(stack, "cold") == 0, slept.stdout + slept.stderr
        headers = {"Origin": page_origin(view.url), "Cookie": view.jar.header()}
        ws, _, document = await connect_and_pull(view.url, view.token, headers, cold_page_bound(stack))
        ws.close()
        view.close()
        return document

    assert asyncio.run(a_tab_through_sleep()).roots, "the tab has its document again"
    assert status(stack)["pools"]["cold"]["pinned"] is False, "a visitor wakes a pool put to sleep"


def cold_page_bound(stack) -> float:
    """A page of an idle pool comes within nginx's page timeout, never as an error."""
    return float(stack.settings.nginx.page_timeout_s)


def test_a_leaking_worker_is_replaced_and_no_page_view_is_lost(stacks, tmp_path):
    shutil.copytree(TEST_APPS / "leaky", tmp_path / "apps" / "leaky")
    limit_mb = 250
    stack = stacks(tmp_path / "apps", workers=1, recycle={"max_rss_mb": limit_mb})
    url = stack.url("/leaky")

    async def leak() -> tuple[Any, float, float]:
        stop = asyncio.Event()
        highest = 0.0

        async def watch_memory() -> None:
            nonlocal highest
            while not stop.is_set():
                found = await metrics(stack)
                rss = [v for (name, _), v in found.items() if name == "process_resident_memory_bytes"]
                highest = max([highest, *rss])
                await asyncio.sleep(0.5)

        async def recycled_twice() -> bool:
            found = await metrics(stack)
            return found["bokeh_stack_worker_recycles_total", (("pool", "default"), ("reason", "rss"))] >= 2

        watcher = asyncio.create_task(watch_memory())
        # Paced (about 2 a second, 4 MB each): a worker's memory is judged once it has run RECYCLE_MIN_AGE_S.
        load = asyncio.create_task(stream_of_page_views(url, 240, concurrency=1, stop=stop, pause=0.5))
        took = await until(recycled_twice, 3 * STEP_TIMEOUT_S, "two workers replaced past max_rss_mb")
        stop.set()
        await watcher
        return await load, took, highest

    stream, took, highest = asyncio.run(leak())
    only_the_pools_steps(stack)
    print(f"\nleaking 4 MB a session, max_rss_mb {limit_mb}: replaced twice in {took:.0f} s; highest RSS "
          f"{highest / 1e6:.0f} MB; {stream}")  # fmt: skip
    assert stream.failures == [], stream.failures[:3]
    assert highest < 2 * limit_mb * 1e6, "the memory stays bounded"
    log = (stack.settings.log_dir / "bokeh_stack_pools.log").read_text()
    assert f"MB resident, max_rss_mb {limit_mb}" in log and "replaced" in log, log
