"""The stack on Docker Swarm for real: a single-node swarm on our own dockerd (made here, left afterwards), the
images built from docker/, `docker stack deploy -c docker-compose.yml -c docker-stack.yml` as users run it (plus
the test overlays: the counter and ticker apps, page limits off), reached only through the port nginx publishes
in mode host on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import subprocess
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from bokeh.util.token import get_session_id

from harness.pageview import _TOKEN, open_page
from harness.stack import ROOT, TEST_APPS, free_ports, page_views, read_executions, run, stream_of_page_views, wait_for

from .docker_engine import Engine, container_address, redis_record, upstream_addresses
from .test_browser import CHROMIUM_ARGS, DOCUMENT_READY, TICKS_T
from .test_resume_browser import STATE, STATUS_TEXT
from .test_resume_browser import _use as use_explorer

pytestmark = [pytest.mark.docker, pytest.mark.swarm]
SECRET = "bokeh-stack-secret"  # docker-stack.yml's external secrets
REDIS_PASSWORD = "bokeh-stack-redis-password"
FILES = [ROOT / "docker-compose.yml", ROOT / "docker-stack.yml", ROOT / "tests/compose.counter.yml"]
FILES.append(ROOT / "tests/stack.test.yml")
REPLICAS = 3
WORKERS_PER_TASK = 2  # BOKEH_STACK_WORKERS' default


@dataclass
class SwarmStack:
    engine: Engine
    name: str
    port: int
    env: dict
    records: Path

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def docker(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        result = subprocess.run(["docker", *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        assert result.returncode == 0, f"docker {' '.join(args)} failed:\n{result.stdout}{result.stderr}"
        return result

    def build(self, tag: str, dockerfile: str) -> None:
        built = subprocess.run(["docker", "build", "-t", tag, "-"], input=dockerfile, text=True, env=self.env,
                               capture_output=True, timeout=300)  # fmt: skip
        assert built.returncode == 0, built.stdout + built.stderr

    def deploy(self) -> None:
        self.docker("stack", "deploy", "--detach=true", *(f"-c={f}" for f in FILES), self.name)

    def containers(self, service: str) -> list[str]:
        """The running containers of one of the stack's services (its tasks on this node)."""
        service_label = f"label=com.docker.swarm.service.name={self.name}_{service}"
        filters = ["--filter", service_label, "--filter", "status=running"]
        return self.docker("ps", "-q", "--no-trunc", *filters).stdout.split()

    def healthy(self, container: str) -> bool:
        inspected = self.engine.docker("inspect", container, check=False)
        return inspected.returncode == 0 and json.loads(inspected.stdout)[0]["State"]["Health"]["Status"] == "healthy"

    def status(self, container: str) -> dict:
        """`bokeh-stack status --json` inside one worker task."""
        shown = self.engine.docker("exec", container, "bokeh-stack", "status", "--json", check=False)
        assert shown.returncode == 0, shown.stdout + shown.stderr
        return json.loads(shown.stdout)

    def exec(self, container: str, *args: str) -> subprocess.CompletedProcess:
        return self.engine.docker("exec", container, *args, check=False)

    def ready(self, replicas: int) -> bool:
        """`replicas` healthy worker tasks, nginx healthy, and nginx reaching exactly those tasks' workers."""
        workers = self.containers("workers")
        nginx = self.containers("nginx")
        return (
            len(workers) == replicas
            and all(self.healthy(c) for c in workers + nginx)
            and len(nginx) == 1
            and self.upstream_addresses() == {self.address(c) for c in workers}
        )

    def address(self, container: str) -> str:
        return container_address(self.engine, container, f"{self.name}_backend")

    def upstream_addresses(self) -> set[str]:
        return upstream_addresses(self.engine.docker("logs", self.containers("nginx")[0], check=False).stdout)

    def hosts_of(self, session_ids: set[str]) -> Counter:
        """Which worker task (container host name) built each of these sessions (the counter app's record)."""
        return Counter(e.host for e in read_executions(self.records / "executions.txt") if e.session_id in session_ids)


@pytest.fixture(scope="module")
def swarm(engine, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("swarm")
    records = tmp / "records"
    records.mkdir()
    records.chmod(0o777)  # written by the workers' non-root user
    port = free_ports(1)
    env = {**engine.env, "BOKEH_STACK_PORT": str(port), "RECORDS_DIR": str(records), "BOKEH_STACK_REPLICAS": "3"}
    env |= {"COUNTER_APP": str(TEST_APPS / "counter"), "TICKER_APP": str(TEST_APPS / "ticker")}
    env.pop("BOKEH_SECRET_KEY", None)
    stack = SwarmStack(engine, f"bst{uuid.uuid4().hex[:8]}", port, env, records)
    if engine.docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip() != "inactive":
        engine.docker("swarm", "leave", "--force")  # a swarm a killed earlier run left behind
    engine.docker("swarm", "init", "--advertise-addr", "127.0.0.1")
    try:
        subprocess.run(
            ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "build"],
            env=env, cwd=ROOT, check=True, capture_output=True, timeout=900,
        )  # fmt: skip
        # Made at provision time, as docs/swarm.md says, and never written to disk.
        for name in (SECRET, REDIS_PASSWORD):
            subprocess.run(["docker", "secret", "create", name, "-"], input=secrets.token_urlsafe(48), text=True,
                           env=env, check=True, capture_output=True)  # fmt: skip
        start = time.monotonic()
        stack.deploy()
        wait_for(lambda: stack.ready(REPLICAS), 180, f"{REPLICAS} healthy worker tasks behind a healthy nginx")
        print(f"\nswarm: deployed and healthy in {time.monotonic() - start:.1f} s")
        yield stack
    finally:
        engine.docker("stack", "rm", stack.name, check=False)
        wait_for(lambda: not stack.containers("workers") and not stack.containers("nginx"), 120, "the stack to go")
        engine.docker("swarm", "leave", "--force", check=False)


def test_every_page_websocket_reaches_the_task_that_rendered_it(swarm):
    """60 page views that keep their websocket, over 3 worker tasks of 2 workers: `status --json` in each task
    counts each one connected on the worker that built it, and no session unconnected."""

    async def with_views_open():
        views = [await open_page(swarm.url("/counter")) for _ in range(60)]
        try:
            tasks = swarm.containers("workers")
            return views, tasks, {c: await asyncio.to_thread(swarm.status, c) for c in tasks}
        finally:
            for view in views:
                view.close()

    views, tasks, shown = run(with_views_open())
    for container, status in shown.items():
        assert [w["state"] for w in status["workers"]] == ["RUNNING"] * WORKERS_PER_TASK, status
        print(f"task {container[:12]}: {[(w['worker'], w['connected'], w['unconnected']) for w in status['workers']]}")
    assert sum(s["totals"]["connected"] for s in shown.values()) == 60
    assert sum(s["totals"]["unconnected"] for s in shown.values()) == 0
    built = swarm.hosts_of({v.session_id for v in views})
    assert sum(built.values()) == 60, "one execution of the app per page view"
    assert set(built) == {c[:12] for c in tasks}, f"sessions on {dict(built)}: not on every task"


def test_the_secret_is_a_docker_secret_readable_by_the_workers_user_alone(swarm):
    for container in swarm.containers("workers"):
        mode = swarm.exec(container, "stat", "-c", "%a %u", f"/run/secrets/{SECRET}").stdout.split()
        assert mode == ["400", "10001"], mode
        assert swarm.exec(container, "test", "-e", "/var/lib/bokeh-stack/secret").returncode == 1
    for container in swarm.containers("nginx"):
        assert swarm.exec(container, "test", "-e", f"/run/secrets/{SECRET}").returncode == 1, "the balancer has none"
    for container in swarm.containers("redis"):
        assert swarm.exec(container, "test", "-e", f"/run/secrets/{SECRET}").returncode == 1, "nor has Redis"
        mode = swarm.exec(container, "stat", "-c", "%a %u", f"/run/secrets/{REDIS_PASSWORD}").stdout.split()
        assert mode == ["400", "10001"], mode
    spec = json.loads(swarm.engine.docker("service", "inspect", f"{swarm.name}_workers").stdout)[0]["Spec"]
    env = spec["TaskTemplate"]["ContainerSpec"]["Env"]
    assert "BOKEH_SECRET_KEY=" in env, "the key itself is in no service's environment"


def _during_page_views(swarm: SwarmStack, action) -> tuple:
    """Page views of the counter app, 4 at a time, from 1 s before `action` (blocking, in a thread) until 2 s after
    it returned; what they saw, and what it returned."""

    async def go():
        done = asyncio.Event()
        load = asyncio.create_task(stream_of_page_views(swarm.url("/counter"), math.inf, concurrency=4, stop=done))
        await asyncio.sleep(1)
        result = await asyncio.to_thread(action)
        await asyncio.sleep(2)
        done.set()
        return await load, result

    # In a thread of its own: Playwright's sync API keeps an event loop running in this one.
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(run, go()).result()


def test_scaling_up_and_down_under_load_without_restarting_nginx(swarm):
    """`docker service scale` while page views run: a new task gets page views within 15 s of being healthy, the
    removed tasks get none once gone, nginx is never restarted and no page view fails."""
    nginx = swarm.containers("nginx")[0]
    nginx_pid = swarm.exec(nginx, "supervisorctl", "-c", "/run/bokeh-stack/supervisord.conf", "pid", "nginx").stdout
    before = set(swarm.containers("workers"))
    timings = {}

    def scale_up():
        start = time.monotonic()
        swarm.docker("service", "scale", "--detach=true", f"{swarm.name}_workers=4")
        new = wait_for(lambda: set(swarm.containers("workers")) - before, 60, "the new worker task")
        task = new.pop()
        wait_for(lambda: swarm.healthy(task), 90, "the new task to be healthy")
        healthy = time.monotonic()
        timings["healthy_after_s"] = healthy - start
        wait_for(lambda: swarm.status(task)["totals"]["unconnected"] + swarm.status(task)["totals"]["connected"] > 0,
                 30, "a page view on the new task", interval=0.5)  # fmt: skip
        timings["page_views_after_healthy_s"] = time.monotonic() - healthy
        return task

    up, new_task = _during_page_views(swarm, scale_up)
    print(f"\nscale 3 -> 4 under load: {up}; {timings}")
    assert up.failures == [], up.failures[:3]
    assert timings["page_views_after_healthy_s"] <= 15

    def scale_down():
        swarm.docker("service", "scale", "--detach=false", f"{swarm.name}_workers=2")
        wait_for(lambda: swarm.ready(2), 60, "nginx to reach the 2 remaining tasks")

    down, _ = _during_page_views(swarm, scale_down)
    print(f"scale 4 -> 2 under load: {down}")
    assert down.failures == [], down.failures[:3]
    remaining = {c[:12] for c in swarm.containers("workers")}
    views = run(page_views([swarm.url("/counter")] * 30, concurrency=3))
    assert set(swarm.hosts_of({v.session_id for v in views})) <= remaining
    assert swarm.containers("nginx") == [nginx]
    assert swarm.exec(nginx, "supervisorctl", "-c", "/run/bokeh-stack/supervisord.conf", "pid", "nginx").stdout == (
        nginx_pid
    ), "nginx was restarted"
    swarm.docker("service", "scale", "--detach=true", f"{swarm.name}_workers={REPLICAS}")
    wait_for(lambda: swarm.ready(REPLICAS), 120, f"{REPLICAS} tasks again")


def test_rolling_update_under_load_fails_no_page_view_and_open_tabs_reconnect(swarm):
    """`docker service update --force` (start-first, one task at a time, health checked) while page views run and
    Chromium tabs stream: no page view fails, and every tab streams again after the last old task stopped."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            tabs = []
            for _ in range(6):
                page = chromium.new_context(viewport={"width": 640, "height": 480}).new_page()
                page.goto(swarm.url("/ticker"))
                tabs.append(page)
            for page in tabs:
                page.wait_for_function(f"() => window.Bokeh && Bokeh.documents.length > 0 && {TICKS_T}.length >= 3",
                                       timeout=60_000)  # fmt: skip
            old = set(swarm.containers("workers"))

            def update():
                swarm.docker("service", "update", "--force", "--detach=false", f"{swarm.name}_workers")
                wait_for(lambda: swarm.ready(REPLICAS), 60, "nginx to reach the new tasks")
                return time.time()

            stream, updated_at = _during_page_views(swarm, update)
            assert not old & set(swarm.containers("workers")), "every task was replaced"
            streams_again = (
                f"() => {{ const t = {TICKS_T}; return t.length > 0 && t[t.length - 1] > {updated_at * 1000}; }}"
            )
            for page in tabs:
                page.wait_for_function(streams_again, timeout=20_000)
        finally:
            chromium.close()
    print(f"\nupdate --force under load: {stream}")
    assert stream.done >= 100
    assert stream.failures == [], stream.failures[:3]


def test_a_used_tab_comes_back_as_its_user_left_it_after_its_task_is_replaced(swarm):
    """A Chromium tab of the shipped explorer app, used (a wave, a dragged frequency, a pan, a selection, the table
    tab, a click); `docker service update --force` replaces every task; the tab, never reloaded, shows what it
    showed, on a new task that resumed it from the redis service's record."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            tab = chromium.new_context(viewport={"width": 1200, "height": 900}).new_page()
            tab.goto(swarm.url("/explorer"))
            tab.wait_for_function(f"() => ({DOCUMENT_READY})() && {STATUS_TEXT}.startsWith('worker ')")
            use_explorer(tab)
            left = tab.evaluate(STATE)
            session_id = get_session_id(_TOKEN.search(tab.content().encode()).group(1).decode())
            redis = swarm.containers("redis")[0]
            wait_for(lambda: "button_click" in "".join(redis_record(swarm.engine, redis, session_id)), 10,
                     "the tab's last change in the redis service")  # fmt: skip
            old = set(swarm.containers("workers"))
            swarm.docker("service", "update", "--force", "--detach=false", f"{swarm.name}_workers")
            wait_for(lambda: swarm.ready(REPLICAS), 60, "nginx to reach the new tasks")
            assert not old & set(swarm.containers("workers")), "every task was replaced"
            tab.wait_for_function(f"() => {STATUS_TEXT}.includes('resumed')", timeout=30_000)
            assert tab.evaluate(STATE) == left, "the tab is not as its user left it"
        finally:
            chromium.close()


def test_a_new_image_rolls_out_under_load_and_a_broken_one_rolls_back(swarm):
    """`docker service update --image` with a new version of an app: served by every task afterwards, with no
    failed page view on the way. An image whose workers cannot start never takes over: Swarm rolls back."""
    image = "bokeh-stack-workers:0.1.0-test-v2"
    dockerfile = (
        "FROM bokeh-stack-workers:0.1.0\nUSER root\n"
        "RUN printf '\\ndoc.title = \"Press me, version 2\"\\n' >> /opt/bokeh-stack/apps/press_me/main.py\n"
        "USER bokeh\n"
    )
    swarm.build(image, dockerfile)

    def roll_out():
        swarm.docker("service", "update", "--image", image, "--detach=false", f"{swarm.name}_workers")
        wait_for(lambda: swarm.ready(REPLICAS), 60, "nginx to reach the new tasks")

    stream, _ = _during_page_views(swarm, roll_out)
    print(f"\nupdate --image under load: {stream}")
    assert stream.failures == [], stream.failures[:3]
    views = run(page_views([swarm.url("/press_me")] * 12, concurrency=3))
    assert {v.document.title for v in views} == {"Press me, version 2"}

    broken = "bokeh-stack-workers:0.1.0-test-broken"
    # A settings file the image names but does not hold: its workers exit at once with a clear error.
    swarm.build(broken, f'FROM {image}\nCMD ["bokeh-stack", "supervisord", "--settings", "/nonexistent.yaml"]\n')
    swarm.docker("service", "update", "--image", broken, "--detach=true", f"{swarm.name}_workers")

    def rolled_back() -> bool:
        spec = json.loads(swarm.engine.docker("service", "inspect", f"{swarm.name}_workers").stdout)[0]
        state = (spec.get("UpdateStatus") or {}).get("State", "")
        return state == "rollback_completed"

    wait_for(rolled_back, 240, "Swarm to roll the broken image back", interval=1)
    wait_for(lambda: swarm.ready(REPLICAS), 60, "the old tasks to serve again")
    views = run(page_views([swarm.url("/press_me")] * 6, concurrency=3))
    assert {v.document.title for v in views} == {"Press me, version 2"}
