"""Seeing the fleet on a real stack: /metrics on the ops listener (and nowhere else), `bokeh-stack status`, a real
Prometheus scraping it, and the /ops dashboard in Chromium. One stack is shared by every test here."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from harness.pageview import open_page
from harness.stack import counter_apps, free_ports, start_stack, wait_for

pytestmark = pytest.mark.stack
WORKERS = 2


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ops")
    running = start_stack(tmp, counter_apps(tmp / "apps", ["counter"]), workers=WORKERS)
    yield running
    running.stop()


def get(url: str, source: str | None = None, host: str | None = None, headers: str = "") -> tuple[int, str]:
    """Status and body of a GET, optionally from another loopback address, with another Host or more headers."""
    parts = urllib.parse.urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10, source_address=(source or "", 0)) as conn:
        conn.sendall(f"GET {parts.path} HTTP/1.0\r\nHost: {host or parts.netloc}\r\n{headers}\r\n".encode())
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode(errors="replace")


def metrics(stack) -> list:
    status, body = get(stack.ops_url("/metrics"))
    assert status == 200, body
    return [s for family in text_string_to_metric_families(body) for s in family.samples]


def total(found: list, name: str, **labels: str) -> float:
    return sum(s.value for s in found if s.name == name and labels.items() <= s.labels.items())


def cli(stack, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "bokeh_stack", *args, "--settings", str(stack.settings_file)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


class OpenPages:
    """Page views whose websockets stay open (connected sessions), on an event loop of their own."""

    def __init__(self, url: str, count: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.views = [self.loop.run_until_complete(open_page(url)) for _ in range(count)]

    def close(self) -> None:
        async def close_all() -> None:
            for view in self.views:
                view.close()
            await asyncio.sleep(0.1)  # the close frames go out

        self.loop.run_until_complete(close_all())
        self.loop.close()


def test_metrics_count_open_sessions_on_the_ops_listener_only(stack):
    pages = OpenPages(stack.url("/counter"), 3)
    try:
        found = metrics(stack)
        assert total(found, "bokeh_stack_sessions", state="connected") == 3
        assert total(found, "bokeh_stack_websocket_connections") == 3
        workers = {f"bokeh_default_{port}" for port in stack.settings.worker_ports}  # on unix sockets: by name
        assert {s.labels["worker"] for s in found if s.name == "bokeh_stack_worker_up" and s.value == 1} == workers
        assert all(
            s.labels.get("worker") in workers and s.labels.get("pool") == "default"
            for s in found
            if s.name.startswith(("bokeh_stack_sessions", "process_"))
        )
        assert total(found, "nginx_up") == 1 and total(found, "nginx_http_requests_total") >= 3

        status = cli(stack, "status", "--json")
        assert status.returncode == 0, status.stderr
        shown = json.loads(status.stdout)
        assert sum(w["connected"] for w in shown["workers"]) == 3 == shown["totals"]["connected"]
        # A fresh worker that answers is RUNNING, though supervisord says STARTING for startsecs (30 s).
        assert [w["state"] for w in shown["workers"]] == ["RUNNING"] * WORKERS
        assert all(w["rss_bytes"] > 10e6 and w["build_p95_s"] is not None for w in shown["workers"] if w["connected"])
        table = cli(stack, "status")
        assert table.stdout.splitlines()[1].split()[6:9] == ["CONNECTED", "UNCONNECTED", "WS"], table.stdout
        assert f"metrics and the live dashboard: {stack.ops_url('/ops')}" in table.stdout
    finally:
        pages.close()

    # The public port knows nothing of them; on the ops listener, only loopback and ops.allow come in.
    for path in ("/metrics", "/ops", "/_bokeh_stack/nginx_status", "/_bokeh_stack/metrics"):
        assert get(f"http://127.0.0.1:{stack.settings.port}{path}")[0] == 404, path
    assert get(stack.ops_url("/metrics"), source="127.0.0.2")[0] == 403
    assert get(stack.ops_url("/"), source="127.0.0.2")[0] == 403


def test_the_ops_listener_answers_only_its_own_names(stack):
    """A web page an operator has open cannot rebind a name of its own to the ops listener (DNS rebinding): any
    other Host gets 421, and the dashboard's websocket opens only from the dashboard's own origin."""
    port = stack.settings.ops.port
    for host in ("127.0.0.1", "localhost", "[::1]"):
        assert get(stack.ops_url("/metrics"), host=f"{host}:{port}")[0] == 200, host
    for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1.evil.example:{port}"):
        for path in ("/metrics", "/ops", "/ops/ws"):
            assert get(stack.ops_url(path), host=host)[0] == 421, (host, path)
    upgrade = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
    upgrade += "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    other_origin = upgrade + f"Origin: http://evil.example:{port}\r\n"
    assert get(stack.ops_url("/ops/ws"), headers=other_origin)[0] == 403
    own_origin = upgrade + f"Origin: http://127.0.0.1:{port}\r\n"
    assert get(stack.ops_url("/ops/ws"), headers=own_origin)[0] == 101


@pytest.fixture
def prometheus(stack, tmp_path):
    """Debian's Prometheus with the stack's own scrape config, scraping every half second (so that a worker's few
    seconds of restart are seen; the shipped config scrapes every 5 s)."""
    config = yaml.safe_load(stack.plan.prometheus_config.read_text())
    config["scrape_configs"][0].update(scrape_interval="500ms", scrape_timeout="400ms")
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    port = free_ports(1)
    log = open(tmp_path / "prometheus.log", "wb")
    argv = ["/usr/bin/prometheus", f"--config.file={path}", f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def query(expression: str) -> list:
        url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                return json.loads(answer.read())["data"]["result"]
        except (urllib.error.URLError, ConnectionError):
            return []

    try:
        yield query
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()


def test_prometheus_sees_the_sessions_and_a_killed_worker_go_down_and_come_back(stack, prometheus):
    pages = OpenPages(stack.url("/counter"), 2)
    try:
        wait_for(lambda: prometheus('sum(bokeh_stack_sessions{state="connected"}) == 2'), 60, "Prometheus to see 2")
    finally:
        pages.close()
    victim = stack.workers()[0]
    label = f'worker="{victim.name}"'
    os.kill(victim.pid, signal.SIGKILL)
    wait_for(lambda: prometheus(f"min_over_time(bokeh_stack_worker_up{{{label}}}[1m]) == 0"), 30, "worker_up 0")
    wait_for(lambda: prometheus(f"bokeh_stack_worker_up{{{label}}} == 1"), 60, "worker_up 1 again")
    wait_for(lambda: prometheus(f"bokeh_stack_worker_restarts_total{{{label}}} == 1"), 30, "the restart counted")
    shown = json.loads(cli(stack, "status", "--json").stdout)
    assert {w["port"]: w["restarts"] for w in shown["workers"]}[victim.port] == 1
    assert shown["totals"]["restarts"] == 1


@pytest.mark.browser
def test_the_ops_dashboard_renders_in_chromium_and_its_data_advances_without_sessions_on_the_workers(stack):
    from playwright.sync_api import sync_playwright

    from .test_browser import CHROMIUM_ARGS, DOCUMENT_READY

    created = total(metrics(stack), "bokeh_stack_sessions_created_total")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = chromium.new_page(viewport={"width": 1200, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(stack.ops_url("/"))  # redirected to /ops
            page.wait_for_function(DOCUMENT_READY, timeout=20_000)
            page.locator("canvas").first.wait_for(timeout=20_000)
            source = "Bokeh.documents[0].get_model_by_name({!r}).data"
            rows = page.evaluate(f"() => {source.format('ops_workers')}.worker")
            assert sorted(rows) == sorted(f"bokeh_default_{port}" for port in stack.settings.worker_ports)
            line = source.format(f"ops_worker_bokeh_default_{stack.settings.worker_ports[0]}")
            first = page.evaluate(f"() => {line}.t.length")
            # Sampled every 5 s: within a few samples, every line has more points.
            page.wait_for_function(f"() => {line}.t.length > {first} + 1", timeout=30_000)
            states = page.evaluate(f"() => {source.format('ops_workers')}.state")
            assert states == ["up"] * WORKERS
            assert page.evaluate(f"() => {line}.rss_mb.at(-1)") > 10
            assert errors == []
        finally:
            chromium.close()
    assert total(metrics(stack), "bokeh_stack_sessions_created_total") == created, "watching made no session"


def test_the_foreground_shows_the_stack_not_supervisords_log(stack):
    log = stack.log()
    for port in stack.settings.worker_ports:
        assert f"worker bokeh_default_{port} serves (pid " in log
    assert f"operators: {stack.ops_url('/ops')}" in log and f"logs: {stack.settings.log_dir}" in log
    assert not [line for line in log.splitlines() if " INFO " in line or " CRIT " in line], log


def test_verbose_brings_supervisords_log_back(stacks, tmp_path):
    verbose = stacks(counter_apps(tmp_path / "apps", ["counter"]), workers=1, up_args=("--verbose",))
    assert " INFO spawned: 'bokeh_stack_ops'" in verbose.log()


def test_status_watch_follows_the_stack(stack):
    command = [
        sys.executable,
        "-m",
        "bokeh_stack",
        "status",
        "--watch",
        "--json",
        "--settings",
        str(stack.settings_file),
    ]
    watch = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        first, second = json.loads(watch.stdout.readline()), json.loads(watch.stdout.readline())
        assert len(first["workers"]) == len(second["workers"]) == WORKERS
        assert second["workers"][0]["uptime_s"] > first["workers"][0]["uptime_s"]
    finally:
        os.killpg(watch.pid, signal.SIGKILL)
        watch.wait()
