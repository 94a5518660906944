"""Pools that size themselves and recycle their workers, without starting anything: the settings, what is rendered
for supervisord and nginx, the pools program's decisions (daemons/sizing.py) and its little HTTP. The pools at work
are tests/test_pools_served.py."""

from __future__ import annotations

import asyncio
import shlex

import pytest

from bokeh_stack.config import topology
from bokeh_stack.config.handoff import ManagedPool, PoolsConfig, read_pools_state, write_pools_state
from bokeh_stack.config.plan import RunPlan
from bokeh_stack.config.settings import load
from bokeh_stack.daemons import little_http, watchdog
from bokeh_stack.daemons.sizing import RECYCLE_MIN_AGE_S, Seen, Sizing, needed, next_step
from bokeh_stack.provisioning import render as rendering
from harness.stack import SHIPPED_APPS

from .test_render import supervisord_programs
from .test_settings import problems


def settings(tmp_path, **overrides):
    return load(environ={}, overrides={"apps_dir": str(SHIPPED_APPS), "runtime_dir": str(tmp_path), **overrides})


# --- Settings ---------------------------------------------------------------------------------------------------


def test_workers_is_a_fixed_size_and_min_or_max_workers_let_a_pool_size_itself(tmp_path):
    fixed = settings(tmp_path, workers=3).pools[0]
    assert (fixed.min_workers, fixed.max_workers, fixed.sizes_itself, fixed.managed) == (3, 3, False, False)
    assert list(fixed.ports) == [5100, 5101, 5102]

    s = settings(
        tmp_path,
        max_workers=4,
        sessions_per_worker=20,
        pools={"heavy": {"apps": ["streaming"], "min_workers": 0, "max_workers": 3, "idle_timeout_s": 60}},
    )
    default, heavy = s.pools
    assert (default.min_workers, default.max_workers, default.sessions_per_worker) == (2, 4, 20)
    assert (heavy.min_workers, heavy.max_workers, heavy.idle_timeout_s) == (0, 3, 60)
    assert heavy.sessions_per_worker == 20, "a pool takes the top-level sessions_per_worker unless it sets its own"
    assert list(default.ports) == [5100, 5101, 5102, 5103] and list(heavy.ports) == [5104, 5105, 5106]
    assert list(default.start_ports) == [5100, 5101] and list(heavy.start_ports) == []


def test_recycle_limits_are_every_pools_unless_a_pool_gives_its_own(tmp_path):
    s = settings(
        tmp_path,
        recycle={"max_rss_mb": 800, "max_age_h": 24},
        pools={"heavy": {"apps": ["streaming"], "recycle": {"max_age_h": 6}}},
    )
    default, heavy = s.pools
    assert (default.recycle.max_rss_mb, default.recycle.max_age_h) == (800, 24)
    assert (heavy.recycle.max_rss_mb, heavy.recycle.max_age_h) == (800, 6)
    # A pool that recycles keeps one more place: the replacement starts before the worker it replaces leaves.
    assert heavy.managed and not heavy.sizes_itself and list(heavy.ports) == [5103, 5104]


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ({"min_workers": 3, "max_workers": 2}, "min_workers (3) is more than max_workers (2)"),
        ({"pools": {"heavy": {"apps": ["streaming"], "min_workers": 4}}}, "pools.heavy.min_workers (4) is more"),
        ({"max_workers": 3, "role": "worker"}, "pool default sizes itself or recycles its workers: that needs nginx"),
        ({"recycle": {"max_age_h": 1}, "worker_hosts": ["w1"]}, "(Compose --scale, Swarm replicas, Kubernetes HPA)"),
        ({"max_workers": 3, "ops": {"metrics": False}}, "that needs ops.metrics"),
        ({"recycle": {"max_rss_mb": -1}}, "recycle.max_rss_mb must be 0 (off) or positive"),
        ({"sessions_per_worker": 0}, "sessions_per_worker must be positive"),
    ],
)
def test_bad_pool_sizes_are_refused_clearly(tmp_path, given, said):
    found = problems(environ={}, overrides={"apps_dir": str(SHIPPED_APPS), "runtime_dir": str(tmp_path), **given})
    assert any(said in p for p in found), found


# --- What is rendered -------------------------------------------------------------------------------------------


def test_a_pool_that_sizes_itself_is_started_by_the_pools_program_and_included_by_nginx(tmp_path):
    plan = RunPlan(settings(tmp_path, pools={"heavy": {"apps": ["streaming"], "min_workers": 0, "max_workers": 3}}))
    rendering.render(plan, static=False)
    rendering.nginx_test(plan)
    programs = supervisord_programs(plan)
    default, heavy = plan.settings.pools
    assert all(p.autostart for p in programs[default.program]), "a fixed pool starts with supervisord"
    assert [p.name for p in programs[heavy.program]] == [f"bokeh_heavy_{port}" for port in (5102, 5103, 5104)]
    assert not any(p.autostart for p in programs[heavy.program]), "its workers are the pools program's to start"
    [pools_program] = programs[topology.POOLS]
    assert shlex.split(pools_program.command)[-2:] == [topology.MODULES["pools"], str(plan.pools_file)]
    assert pools_program.priority < 999, "it starts before the workers (supervisord's default priority)"

    site = plan.nginx_site_conf.read_text()
    assert f'include "{plan.pool_members(heavy)}";' in site
    assert f'include "{plan.pool_members(default)}"' not in site, "a fixed pool's servers are in the config itself"
    assert plan.pool_members(heavy).read_text() == f"    server unix:{plan.wake_socket} max_fails=0;\n"

    config = PoolsConfig.read(plan.pools_file)
    [managed] = config.pools
    assert (managed.name, managed.apps, managed.min_workers, managed.max_workers) == ("heavy", ("streaming",), 0, 3)
    assert [slot[0] for slot in managed.slots] == [5102, 5103, 5104]
    assert managed.process(5103) == "bokeh_heavy:bokeh_heavy_5103"
    assert config.hold_s == plan.settings.nginx.page_timeout_s - rendering.HOLD_MARGIN_S


def test_rendering_again_keeps_the_servers_the_pools_program_wrote_while_they_name_its_workers(tmp_path):
    plan = RunPlan(settings(tmp_path, min_workers=1, max_workers=3))
    rendering.render(plan, static=False)
    [pool] = plan.settings.pools
    members = plan.pool_members(pool)
    assert members.read_text() == f"    server unix:{plan.worker_socket(5100)} max_fails=0;\n", "its first worker"
    grown = topology.upstream_members([f"unix:{plan.worker_socket(port)}" for port in (5101, 5102)])
    members.write_text(grown)
    rendering.render(plan, static=False)
    assert members.read_text() == grown, "the pool as it is now, not as it started"
    members.write_text("    server 10.9.9.9:1 max_fails=0;\n")
    rendering.render(plan, static=False)
    assert members.read_text() == f"    server unix:{plan.worker_socket(5100)} max_fails=0;\n", "not its worker"


def test_the_watchdog_is_given_every_worker_place_with_its_endpoint():
    timeout, path, workers = watchdog.parse(["5", "/p/", "g:g_1=unix:/s/1.sock", "g:g_2=127.0.0.1:2"])
    assert (timeout, path, workers) == (5.0, "/p/", {"g:g_1": "unix:/s/1.sock", "g:g_2": "127.0.0.1:2"})
    assert watchdog.parse(["5", "/"]) is None and watchdog.parse(["5", "/", "no-endpoint"]) is None


# --- Decisions --------------------------------------------------------------------------------------------------


def pool(lo=1, hi=3, per=4, idle=60, **recycle) -> ManagedPool:
    return ManagedPool("p", "bokeh_p", ("app",), lo, hi, per, idle, recycle, (), "")


def seen(*sessions, age=100.0, rss=100.0, made=0, first_rss=None) -> list[Seen]:
    return [Seen(5100 + i, n, rss, age, made, first_rss or rss) for i, n in enumerate(sessions)]


def test_a_pool_adds_as_many_workers_as_its_sessions_need_within_its_bounds():
    assert [needed(n, pool()) for n in (0, 4, 5, 10, 100)] == [1, 1, 2, 3, 3]
    assert needed(0, pool(lo=0)) == 0 and needed(1, pool(lo=0)) == 1
    sizing = Sizing()
    step = next_step(pool(), seen(10), sizing, now=0.0)
    assert step and step.kind == "add" and "10 sessions, 4 a worker: 3 workers" in step.why
    assert sizing.target == 3, "the target that status, /ops and the metrics show"
    assert next_step(pool(), seen(4, 4, 4), Sizing(), now=0.0) is None, "12 sessions on 3 workers: enough"


def test_a_pool_removes_its_least_used_worker_only_after_idle_timeout_s_with_one_to_spare():
    sizing = Sizing()
    workers = seen(3, 0, 1)
    assert next_step(pool(idle=60), workers, sizing, now=0.0) is None, "4 sessions need 1: from now on, 60 s"
    assert next_step(pool(idle=60), workers, sizing, now=59.0) is None
    step = next_step(pool(idle=60), workers, sizing, now=60.0)
    assert step and step.kind == "remove" and step.port == 5101, "the one with no session"
    assert next_step(pool(idle=60), seen(3, 1), sizing, now=61.0) is None, "the next step waits 60 s again"
    assert next_step(pool(idle=60), seen(3, 1), sizing, now=120.0).kind == "remove"
    busy_again = Sizing(spare_since=0.0)
    assert next_step(pool(idle=60), seen(4, 4), busy_again, now=30.0) is None and busy_again.spare_since is None


def test_a_worker_too_busy_to_answer_keeps_its_pool_from_shrinking():
    sizing = Sizing(spare_since=0.0)
    busy = [Seen(5100, 0, 100.0, 100.0, 0, 100.0), Seen(5101, None, None, 100.0, None, 100.0)]
    assert next_step(pool(idle=60), busy, sizing, now=100.0) is None and sizing.spare_since is None
    assert next_step(pool(idle=60), seen(0, 0), sizing, now=101.0) is None, "idle_timeout_s from the next answer on"
    assert next_step(pool(idle=60), seen(0, 0), sizing, now=161.0).kind == "remove"


def test_a_pool_with_min_workers_0_lets_its_last_worker_go_only_with_no_session():
    sizing = Sizing()
    assert next_step(pool(lo=0, idle=10), seen(1), sizing, now=0.0) is None
    assert next_step(pool(lo=0, idle=10), seen(1), sizing, now=100.0) is None, "one tab holds it"
    assert next_step(pool(lo=0, idle=10), seen(0), sizing, now=100.0) is None
    assert next_step(pool(lo=0, idle=10), seen(0), sizing, now=110.0).kind == "remove"


def test_an_operators_pin_holds_the_pool_until_auto():
    sizing = Sizing(pinned=3)
    assert next_step(pool(), seen(0), sizing, now=0.0).kind == "add" and sizing.target == 3
    assert next_step(pool(), seen(0, 0, 0), sizing, now=1000.0) is None, "idle, but pinned"
    sizing.pinned = 1
    assert next_step(pool(), seen(9, 0, 0), sizing, now=0.0).kind == "remove", "at once, not after idle"


@pytest.mark.parametrize(
    ("limits", "worker", "reason"),
    [
        ({"max_rss_mb": 500}, {"rss": 600.0, "first_rss": 120.0}, "rss"),
        ({"max_age_h": 24}, {"age": 25 * 3600.0}, "age"),
        ({"max_sessions": 1000}, {"made": 1000}, "sessions"),
    ],
)
def test_a_worker_past_a_recycle_limit_is_replaced(limits, worker, reason):
    step = next_step(pool(**limits), seen(2, **worker), Sizing(), now=0.0)
    assert step and (step.kind, step.port, step.reason) == ("recycle", 5100, reason)


def test_memory_is_judged_only_once_a_worker_has_run_and_only_if_it_grew_past_the_limit():
    young = seen(2, rss=600.0, first_rss=120.0, age=RECYCLE_MIN_AGE_S - 1)
    assert next_step(pool(max_rss_mb=500), young, Sizing(), now=0.0) is None
    born_big = seen(2, rss=600.0, first_rss=550.0)
    assert next_step(pool(max_rss_mb=500), born_big, Sizing(), now=0.0) is None, "a new one would be as big"


def test_a_pool_with_a_worker_to_spare_lets_the_one_past_a_limit_go():
    workers = [Seen(5100, 0, 100.0, 100.0, 0, 100.0), Seen(5101, 2, 900.0, 100.0, 0, 100.0)]
    step = next_step(pool(idle=1, max_rss_mb=500), workers, Sizing(spare_since=0.0), now=5.0)
    assert step and (step.kind, step.port) == ("remove", 5101)


# --- The pools program's state and HTTP ---------------------------------------------------------------------------


def test_the_pools_state_is_read_only_from_the_supervisord_that_runs_now(tmp_path):
    from bokeh_stack.config.handoff import PoolState

    path = tmp_path / "pools-state.json"
    write_pools_state(path, 42, {"heavy": PoolState([5102], 1, "0..3", False, {"rss": 1}, [(1.0, "+5102")])})
    [state] = read_pools_state(path, 42).values()
    assert (state.serving, state.target, state.recycles, state.events) == ([5102], 1, {"rss": 1}, [(1.0, "+5102")])
    assert read_pools_state(path, 43) == {}, "left by an earlier supervisord"
    assert read_pools_state(tmp_path / "missing.json", 42) == {} and read_pools_state("", 42) == {}


def test_the_waiting_room_hands_a_request_on_as_it_came_and_answers_what_it_cannot(tmp_path):
    async def ask(head: bytes) -> str:
        async def worker(request: little_http.Request) -> little_http.Response:  # says what it was sent
            return little_http.Response(200, f"{request.method} {request.target} {request.headers['x-real-ip']}")

        async def room(request: little_http.Request) -> little_http.Response | little_http.Relay:
            if request.app("/") == "streaming":
                return little_http.Relay(f"unix:{tmp_path / 'worker.sock'}")
            return little_http.Response(503, little_http.waiting_page(request.same_site), html=True)

        servers = [
            await little_http.serve_unix(str(tmp_path / "worker.sock"), worker, mode=0o600),
            await little_http.serve_unix(str(tmp_path / "room.sock"), room, mode=0o600),
        ]
        try:
            reader, writer = await asyncio.open_unix_connection(tmp_path / "room.sock")
            writer.write(head)
            answer = (await reader.read()).decode()
            writer.close()
        finally:
            for server in servers:
                server.close()
        return answer

    said = asyncio.run(ask(b"GET /streaming/?x=1 HTTP/1.1\r\nHost: h\r\nX-Real-IP: 10.1.2.3\r\n\r\n"))
    assert said.startswith("HTTP/1.1 200 OK") and said.endswith("\r\n\r\nGET /streaming/?x=1 10.1.2.3"), said
    waiting = asyncio.run(ask(b"GET //evil.example/ HTTP/1.1\r\nHost: h\r\nX-Real-IP: 1.2.3.4\r\n\r\n"))
    assert waiting.startswith("HTTP/1.1 503") and 'href="/"' in waiting and "evil" not in waiting.split("\r\n\r\n")[1]
    assert asyncio.run(ask(b"nonsense\r\n\r\n")).startswith("HTTP/1.1 400")
    assert (tmp_path / "room.sock").stat().st_mode & 0o777 == 0o600
