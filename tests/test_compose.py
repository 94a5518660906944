"""`docker compose up` for real: our own dockerd, the images built from docker/, the compose file as users run it
(with a test overlay adding the counter app), reached only through the port published on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bokeh_stack.config import topology
from bokeh_stack.config.discovery import discover_apps
from harness.pageview import connect_and_pull, open_page, page_view, sign_in
from harness.stack import (
    ROOT,
    SHIPPED_APPS,
    TEST_APPS,
    during_page_views,
    executions_per_view,
    free_ports,
    page_views,
    read_executions,
    run,
    wait_for,
)

from .docker_engine import Engine, container_address, page_upstream, redis_record, upstream_addresses

pytestmark = pytest.mark.docker
SHIPPED = [source.name for source in discover_apps(SHIPPED_APPS)]


@dataclass
class ComposeStack:
    engine: Engine
    project: str
    port: int
    ops_port: int
    env: dict
    records: Path
    timings: dict

    def compose(self, *args: str, timeout: float = 900, env: dict | None = None) -> subprocess.CompletedProcess:
        names = ("docker-compose.yml", "docker-compose.override.yml", "tests/compose.counter.yml")
        files = [arg for name in names for arg in ("-f", str(ROOT / name))]
        result = subprocess.run(
            ["docker-compose", "-p", self.project, *files, *args],
            env=env or self.env, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        assert result.returncode == 0, f"docker-compose {' '.join(args)} failed:\n{result.stdout}{result.stderr}"
        return result

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def containers(self, service: str) -> list[str]:
        out = self.engine.docker(
            "ps", "-q", "--filter", f"label=com.docker.compose.project={self.project}",
            "--filter", f"label=com.docker.compose.service={service}",
        ).stdout  # fmt: skip
        return out.split()

    def health(self, container: str) -> str:
        return json.loads(self.engine.docker("inspect", container).stdout)[0]["State"]["Health"]["Status"]

    def exec(self, container: str, *args: str) -> subprocess.CompletedProcess:
        return self.engine.docker("exec", container, *args, check=False)

    def address(self, container: str) -> str:
        return container_address(self.engine, container, f"{self.project}_backend")

    def wait_serving(self, workers: int) -> list[str]:
        """`workers` worker containers, healthy (serving, not just started: nginx keeps a container it tried too
        early out of rotation), and nginx reaching exactly them; their ids."""
        containers = wait_for(lambda: len(self.containers("workers")) == workers and self.containers("workers"),
                              60, f"{workers} worker containers")  # fmt: skip
        wait_for(lambda: all(self.health(c) == "healthy" for c in containers), 120, f"{workers} healthy workers")
        addresses = {self.address(c) for c in containers}
        nginx = self.containers("nginx")[0]
        wait_for(lambda: upstream_addresses(self.engine.docker("logs", nginx, check=False).stdout) == addresses,
                 60, f"nginx to reach the {workers} worker containers")  # fmt: skip
        return containers


@pytest.fixture(scope="module")
def stack(engine, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compose")
    counter = tmp / "counter"
    shutil.copytree(TEST_APPS / "counter", counter)
    records = tmp / "records"
    records.mkdir()
    records.chmod(0o777)  # written by the workers' non-root user
    port = free_ports(2)
    env = {**engine.env, "BOKEH_STACK_PORT": str(port), "COUNTER_APP": str(counter), "RECORDS_DIR": str(records)}
    env["BOKEH_STACK_OPS__PORT"] = str(port + 1)
    env.pop("BOKEH_SECRET_KEY", None)
    stack = ComposeStack(engine, f"bokehstacktest{uuid.uuid4().hex[:8]}", port, port + 1, env, records, {})
    try:
        start = time.monotonic()
        stack.compose("build")
        stack.timings["build_s"] = time.monotonic() - start
        start = time.monotonic()
        try:
            stack.compose("up", "-d", "--scale", "workers=2")
        except AssertionError:
            for service in ("workers", "nginx"):
                for container in stack.containers(service):
                    health = json.loads(engine.docker("inspect", container).stdout)[0]["State"].get("Health")
                    print(service, container, json.dumps(health, indent=1)[-1500:])
                print(engine.docker("logs", "--tail", "30", stack.containers(service)[0], check=False).stderr)
            raise
        wait_for(lambda: stack.containers("nginx") and stack.health(stack.containers("nginx")[0]) == "healthy",
                 120, "the nginx container to be healthy")  # fmt: skip
        stack.timings["up_to_healthy_s"] = time.monotonic() - start
        print(f"\ncompose timings: {stack.timings}")
        yield stack
    finally:
        try:
            stack.compose("down", "--volumes", "--remove-orphans")
        except AssertionError as e:
            print(e)


def test_every_app_serves_through_the_published_port(stack):
    index = urllib.request.urlopen(stack.url("/")).read()
    for app in SHIPPED:
        assert f'href="/{app}"'.encode() in index
        assert run(page_view(stack.url(f"/{app}"))).document.roots
    assert urllib.request.urlopen(stack.url("/healthz")).read() == b"ok\n"


def test_one_execution_per_page_view_over_two_worker_containers(stack):
    workers = stack.containers("workers")
    assert len(workers) == 2
    views = run(page_views([stack.url("/counter")] * 40, concurrency=4))
    per_view, per_worker = executions_per_view(read_executions(stack.records / "executions.txt"), views)
    assert per_view == 1.0, f"{per_view:.2f} executions per page view"
    hosts = {worker.split(":")[0] for worker in per_worker}
    assert len(hosts) == 2, f"sessions landed on {dict(per_worker)}: not on both worker containers"


def test_containers_run_as_non_root_and_only_nginx_publishes(stack):
    for service in ("workers", "nginx", "redis"):
        for container in stack.containers(service):
            assert stack.exec(container, "id", "-u").stdout.strip() == "10001"
    for container in stack.containers("workers") + stack.containers("redis"):
        assert stack.engine.docker("port", container).stdout.strip() == ""
    published = stack.engine.docker("port", stack.containers("nginx")[0]).stdout
    assert sorted(published.strip().splitlines()) == sorted(
        f"{port}/tcp -> 127.0.0.1:{port}" for port in (stack.port, stack.ops_port)
    )


def test_one_secret_shared_by_the_worker_containers_and_not_in_the_image(stack):
    secrets = {stack.exec(c, "cat", "/var/lib/bokeh-stack/secret").stdout for c in stack.containers("workers")}
    assert len(secrets) == 1 and len(secrets.pop().strip()) >= 32
    image = json.loads(stack.engine.docker("image", "inspect", "bokeh-stack-workers:0.1.0").stdout)[0]
    assert not any(var.startswith("BOKEH_SECRET_KEY=") and var != "BOKEH_SECRET_KEY=" for var in image["Config"]["Env"])


def test_metrics_of_both_worker_containers_in_one_scrape_and_status_inside_one(stack):
    views = run(page_views([stack.url("/counter")] * 6, concurrency=2))
    assert len(views) == 6
    body = urllib.request.urlopen(f"http://127.0.0.1:{stack.ops_port}/metrics", timeout=10).read().decode()
    found = [s for family in text_string_to_metric_families(body) for s in family.samples]
    up = {s.labels["worker"]: s.value for s in found if s.name == "bokeh_stack_worker_up"}
    # `workers` stands for both containers: each of its workers is scraped at its own address.
    assert len(up) == 4 and set(up.values()) == {1.0}, up
    assert len({worker.rsplit(":", 1)[0] for worker in up}) == 2
    created = sum(s.value for s in found if s.name == "bokeh_stack_sessions_created_total")
    assert created >= 6
    assert any(s.name == "nginx_http_requests_total" and s.value > 6 for s in found)
    assert urllib.request.urlopen(f"http://127.0.0.1:{stack.ops_port}/ops", timeout=10).status == 200
    with pytest.raises(urllib.error.HTTPError) as public:
        urllib.request.urlopen(stack.url("/metrics"), timeout=10)
    assert public.value.code == 404

    status = stack.exec(stack.containers("workers")[0], "bokeh-stack", "status", "--json")
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert [w["state"] for w in shown["workers"]] == ["RUNNING", "RUNNING"]
    assert all(w["rss_bytes"] > 10e6 for w in shown["workers"])


def test_logs_show_every_worker_prefixed(stack):
    logs = stack.compose("logs", "--no-color", "workers").stdout
    for port in (5100, 5101):
        lines = [line for line in logs.splitlines() if f"bokeh_default_{port} " in line]
        containers = {line.split("|")[0].strip() for line in lines}
        assert len(containers) == 2, f"bokeh_default_{port} not logging from both containers: {containers}"


def test_a_killed_worker_process_comes_back_with_no_failed_page_view(stack):
    container = stack.containers("workers")[0]
    conf = "/run/bokeh-stack/supervisord.conf"
    pid = stack.exec(container, "supervisorctl", "-c", conf, "pid", "bokeh_default:bokeh_default_5100").stdout.strip()
    assert pid.isdigit(), pid

    def kill() -> None:
        killed = stack.exec(container, "sh", "-c", f"kill -9 {pid}")  # no kill binary in a slim image
        assert killed.returncode == 0, killed.stderr

    stream, _ = run(during_page_views(stack.url("/counter"), 8.0, kill))
    print(f"\nkill -9 under load: {stream}")
    assert stream.done >= 40
    assert stream.failures == [], f"{stream}: {stream.failures[:3]}"

    def restarted() -> bool:
        new = stack.exec(
            container, "supervisorctl", "-c", conf, "pid", "bokeh_default:bokeh_default_5100"
        ).stdout.strip()
        health = ["python", "-m", topology.MODULES["container"], "health", "workers"]
        healthy = stack.exec(container, *health).returncode == 0
        return new.isdigit() and new != pid and healthy

    wait_for(restarted, 30, "supervisord to restart the killed worker", interval=0.5)


def test_reload_inside_a_worker_container_fails_no_page_view(stack):
    """`docker compose exec workers python -m bokeh_stack reload --role worker`: that container's workers restart
    one at a time, each closing its websockets cleanly, while nginx (in its own container) sends page views
    elsewhere."""
    container = stack.containers("workers")[0]
    conf = "/run/bokeh-stack/supervisord.conf"

    def pids() -> str:
        return stack.exec(container, "supervisorctl", "-c", conf, "pid", "all").stdout

    before = pids()

    def start_reload() -> subprocess.Popen:  # in the background: the page views go on meanwhile
        command = ["docker", "exec", container, "python", "-m", "bokeh_stack", "reload", "--role", "worker"]
        return subprocess.Popen(
            command, env=stack.engine.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    stream, reload = run(during_page_views(stack.url("/counter"), 12.0, start_reload))
    output, _ = reload.communicate(timeout=120)
    print(f"\nreload inside a worker container under load: {stream}")
    assert reload.returncode == 0, output
    assert "restarted bokeh_default_5100" in output and "restarted bokeh_default_5101" in output
    assert stream.failures == [], f"{stream}: {stream.failures[:3]}"
    assert pids() != before


def test_a_tab_resumes_in_another_worker_container_from_the_redis_service(stack):
    """A tab of the shipped explorer app chooses a wave and a frequency; the worker container that served it stops
    (`docker stop`, as a replaced container does); the tab's token, back through nginx, reaches a worker in the other
    container, which builds the session from the record in the redis service: the widgets, and what the app derived
    from them. Redis answers only to the password it shares with the workers, and holds none of their secret."""
    redis = stack.containers("redis")[0]
    assert "NOAUTH" in stack.exec(redis, "redis-cli", "PING").stdout, "Redis must want a password"
    assert stack.exec(redis, "test", "-e", "/var/lib/bokeh-stack/secret").returncode == 1, "the workers' secret"
    nginx = stack.containers("nginx")[0]
    origin = {"Origin": stack.url("").rstrip("/")}

    async def scenario():
        tab = await open_page(stack.url("/explorer"), document_ready=True)
        await tab.change(tab.document.select_one({"name": "wave"}), value="square")
        await tab.change(tab.document.select_one({"name": "frequency"}), value=7)
        await asyncio.to_thread(wait_for, lambda: len(redis_record(stack.engine, redis, tab.session_id)) >= 4, 10,
                                "the tab's record in the redis service")  # fmt: skip
        served = page_upstream(stack.engine.docker("logs", nginx, check=False).stdout, "/explorer")
        by_address = {stack.address(c): c for c in stack.containers("workers")}
        assert served in by_address, f"nginx says {served} served the page, not one of {by_address}"
        container = by_address[served]
        await asyncio.to_thread(stack.engine.docker, "stop", container)
        try:
            ws, _, doc = await connect_and_pull(stack.url("/explorer"), tab.token, origin, timeout=15)
            ws.close()
        finally:
            tab.close()
        return container, doc

    stopped, doc = run(scenario())
    try:
        assert doc.select_one({"name": "wave"}).value == "square" and doc.select_one({"name": "frequency"}).value == 7
        assert doc.select_one({"name": "summary"}).text.startswith("square at 7 Hz"), "the app's callbacks ran again"
        assert "resumed with" in doc.select_one({"name": "status"}).text
    finally:
        stack.engine.docker("start", stopped)
        stack.wait_serving(2)


def test_the_redis_service_stopped_under_load_fails_no_page_view(stack):
    """Page views of the explorer app (each session recorded in Redis) while the redis container stops: the
    records' writes fail, logged once in a while, and no page view does. Redis comes back with the same password."""
    redis = stack.containers("redis")[0]

    def stop_redis() -> subprocess.Popen:  # in the background: the page views go on meanwhile
        return subprocess.Popen(["docker", "stop", redis], env=stack.engine.env, stdout=subprocess.DEVNULL)

    try:
        # Each page view's DocumentReady is recorded: a write to Redis.
        stream, stopping = run(during_page_views(stack.url("/explorer"), 8.0, stop_redis, document_ready=True))
        assert stopping.wait(timeout=60) == 0
        print(f"\nredis stopped under load: {stream}")
        assert stream.done >= 20 and stream.failures == [], f"{stream}: {stream.failures[:3]}"
        logs = stack.compose("logs", "--no-color", "workers").stdout
        assert "records are incomplete while it is" in logs, "the workers say their store is gone"
    finally:
        stack.engine.docker("start", redis)
        wait_for(lambda: stack.health(redis) == "healthy", 60, "the redis container to be healthy again")


def test_scaling_a_running_stack_needs_no_nginx_restart(stack):
    """`docker compose up -d --scale workers=3` on the running stack: nginx reaches the new container (its
    upstreams program re-resolved `workers` and reloaded it) and page views land on all three; back to 2 the same
    way. The nginx container is the same one throughout, never restarted."""
    nginx = stack.containers("nginx")[0]
    started = json.loads(stack.engine.docker("inspect", nginx).stdout)[0]["State"]["StartedAt"]

    def scale(workers: int) -> list[str]:
        stack.compose("up", "-d", "--no-recreate", "--scale", f"workers={workers}")
        return stack.wait_serving(workers)

    containers = scale(3)
    views = run(page_views([stack.url("/counter")] * 60, concurrency=3))
    ids = {v.session_id for v in views}
    hosts = {e.host for e in read_executions(stack.records / "executions.txt") if e.session_id in ids}
    assert hosts == {c[:12] for c in containers}, f"page views on {hosts}, not on all 3 containers"
    scale(2)
    assert run(page_views([stack.url("/counter")] * 10, concurrency=2))
    assert stack.containers("nginx") == [nginx]
    assert json.loads(stack.engine.docker("inspect", nginx).stdout)[0]["State"]["StartedAt"] == started


def test_sign_in_turned_on_in_the_nginx_container(stack):
    """BOKEH_STACK_AUTH__MODE=password recreates only nginx; users are added inside it, onto the auth volume."""

    def nginx_up(env: dict) -> str:
        stack.compose("up", "-d", "--no-deps", "nginx", env=env)
        try:
            wait_for(lambda: stack.containers("nginx") and stack.health(stack.containers("nginx")[0]) == "healthy",
                     120, "the nginx container to be healthy")  # fmt: skip
        except AssertionError:
            logs = stack.engine.docker("logs", "--tail", "40", stack.containers("nginx")[0], check=False)
            print(logs.stdout[-4000:], logs.stderr[-4000:])
            raise
        return stack.containers("nginx")[0]

    signed = {**stack.env, "BOKEH_STACK_AUTH__MODE": "password", "BOKEH_STACK_ACCESS": "{cosine: {users: [alice]}}"}
    container = nginx_up(signed)
    try:
        added = subprocess.run(
            ["docker", "exec", "-i", container, "bokeh-stack", "users", "add", "alice", "--password-stdin"],
            input="correct horse battery\n", env=stack.engine.env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert added.returncode == 0 and "/var/lib/bokeh-stack-auth/users.json" in added.stdout, added.stderr
        refused = urllib.request.urlopen(stack.url("/cosine"), timeout=10)  # follows the redirect, as a browser does
        assert refused.url == stack.url("/login?next=%2Fcosine") and b'name="password"' in refused.read()
        status, jar, _ = run(sign_in(stack.url("").rstrip("/"), "alice", "correct horse battery"))
        assert status == 303
        assert run(page_view(stack.url("/cosine"), jar=jar)).document.roots, "the page and its websocket, signed in"
        image = json.loads(stack.engine.docker("inspect", container).stdout)[0]["Config"]["Image"]
        in_image = stack.engine.docker("run", "--rm", "--entrypoint", "ls", image, "-A", "/var/lib/bokeh-stack-auth")
        assert in_image.stdout.strip() == "", "no users file in the image"
    finally:
        nginx_up(stack.env)  # sign-in off again, for the tests after this one


def test_the_images_run_on_a_read_only_root_without_capabilities(stack):
    """As kubernetes/ runs them (readOnlyRootFilesystem, all capabilities dropped, no privilege escalation, only
    the runtime dir, /tmp and a secret's directory writable): the images start and answer their own health checks."""
    name = f"{stack.project}-ro"
    key = secrets.token_urlsafe(48)
    locked = ["--read-only", "--tmpfs", "/run/bokeh-stack:uid=10001,gid=10001", "--tmpfs", "/tmp", "--cap-drop", "ALL",
              "--security-opt", "no-new-privileges", "--network", name, "-e", f"BOKEH_SECRET_KEY={key}"]  # fmt: skip
    stack.engine.docker("network", "create", name)
    try:
        stack.engine.docker("run", "-d", "--name", f"{name}-workers", "--network-alias", "workers", *locked,
                            "bokeh-stack-workers:0.1.0")  # fmt: skip
        stack.engine.docker("run", "-d", "--name", f"{name}-nginx", *locked, "--tmpfs",
                            "/var/lib/bokeh-stack-auth:uid=10001", "bokeh-stack-nginx:0.1.0")  # fmt: skip
        stack.engine.docker("run", "-d", "--name", f"{name}-redis", *locked, "--tmpfs",
                            "/var/lib/bokeh-stack-redis:uid=10001", "bokeh-stack-redis:0.1.0")  # fmt: skip
        for service in ("workers", "nginx", "redis"):
            health = ["python", "-m", topology.MODULES["container"], "health", service]
            wait_for(lambda s=service, h=health: stack.exec(f"{name}-{s}", *h).returncode == 0, 120,
                     f"the read-only {service} container to be healthy", interval=1)  # fmt: skip
    finally:
        stack.engine.docker("rm", "-f", f"{name}-workers", f"{name}-nginx", f"{name}-redis", check=False)
        stack.engine.docker("network", "rm", name, check=False)


def test_down_leaves_nothing_running(stack):
    stack.compose("down", "--volumes", "--remove-orphans")
    label = f"label=com.docker.compose.project={stack.project}"
    assert stack.engine.docker("ps", "-a", "-q", "--filter", label).stdout.strip() == ""
    assert stack.engine.docker("network", "ls", "-q", "--filter", label).stdout.strip() == ""
    assert stack.engine.docker("volume", "ls", "-q", "--filter", label).stdout.strip() == ""
    with pytest.raises(OSError):
        urllib.request.urlopen(stack.url("/healthz"), timeout=3)
