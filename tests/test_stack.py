"""The real stack through nginx: supervisord, bokeh serve workers and nginx on loopback ports."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import yaml
from bokeh.util.token import get_session_id

from bokeh_stack.config.topology import local_target
from bokeh_stack.daemons.worker import LISTENING
from harness.pageview import _TOKEN, PageViewError, open_page, page_view
from harness.stack import SHIPPED_APPS, counter_apps, during_page_views, executions_per_view, page_views, run, wait_for

pytestmark = pytest.mark.stack


def http_get(url: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_every_shipped_app_serves_through_nginx(stacks):
    stack = stacks(SHIPPED_APPS, workers=2)
    apps = stack.settings.apps
    assert set(apps) == {"cosine", "explorer", "large_data", "lifecycle", "press_me", "random_walk", "streaming"}

    status, _, index = http_get(stack.url("/"))
    assert status == 200
    for app in apps:
        assert f'href="/{app}"'.encode() in index

    for app in apps:
        page = http_get(stack.url(f"/{app}"))[2]
        assert page.count(b'<a href="/" class="bokeh-stack-index"') == 1, f"{app}: no way back to the index"
        view = run(page_view(stack.url(f"/{app}")))
        assert view.document.roots, f"{app}: the pulled document has no roots"
        assert view.document.title

    # BokehJS comes from nginx's disk, cacheable for good and gzipped.
    status, headers, body = http_get(stack.url("/static/js/bokeh.min.js"), {"Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert "immutable" in headers["Cache-Control"]
    assert headers["Server"] == "nginx"  # no version
    # An app's own static/ directory is served too.
    status, _, css = http_get(stack.url("/lifecycle/static/style.css"))
    assert status == 200 and b"lifecycle-header" in css
    assert http_get(stack.url("/healthz"))[0] == 200
    assert http_get(stack.url("/nothing-here"))[0] == 404
    # Another Host name gets nginx's default server, never an app.
    assert http_get(stack.url("/cosine"), {"Host": "evil.example"})[0] == 421
    # Without sign-in too, a link carrying someone's session id or token gets its visitor a session of its own.
    sent = _TOKEN.search(http_get(stack.url("/press_me"))[2]).group(1).decode()
    for path, headers in (
        (f"/press_me?bokeh-session-id={get_session_id(sent)}", {}),
        ("/press_me", {"Bokeh-Session-Id": get_session_id(sent)}),
        (f"/press_me?bokeh-token={sent}", {}),
    ):
        status, _, page = http_get(stack.url(path), headers)
        assert status == 200 and get_session_id(_TOKEN.search(page).group(1).decode()) != get_session_id(sent), path


def test_one_execution_per_page_view_with_every_worker_used(stacks, tmp_path):
    stack = stacks(counter_apps(tmp_path / "apps", ["counter"]), workers=3)
    url = stack.url("/counter")
    views = run(page_views([url] * 24, concurrency=1))
    views += run(page_views([url] * 24, concurrency=8))

    per_view, per_worker = executions_per_view(stack.executions(), views)
    assert per_view == 1.0, f"{per_view:.2f} app executions per page view (sessions built twice)"
    assert {int(w.rsplit(":", 1)[1]) for w in per_worker} == set(stack.settings.worker_ports), dict(per_worker)
    # The document each client pulled came from the worker that ran the app for its session.
    for view in views:
        served_by = next(e.port for e in stack.executions() if e.session_id == view.session_id)
        assert view.document.get_model_by_name("worker").text.endswith(str(served_by))


def test_a_returning_browser_keeps_its_worker(stacks, tmp_path):
    stack = stacks(counter_apps(tmp_path / "apps", ["counter"]), workers=3)

    async def visits():
        first = await page_view(stack.url("/counter"))
        again = [await page_view(stack.url("/counter"), jar=first.jar) for _ in range(5)]
        return [first] + again

    views = run(visits())
    assert "bokeh_affinity" in views[0].jar.cookies
    per_view, per_worker = executions_per_view(stack.executions(), views)
    assert per_view == 1.0 and len(per_worker) == 1


def test_each_pool_serves_only_its_apps(stacks, tmp_path):
    apps = counter_apps(tmp_path / "apps", ["alpha", "beta", "gamma"])
    stack = stacks(apps, workers=2, pools={"heavy": {"apps": ["gamma"], "workers": 2}})
    default, heavy = stack.settings.pools
    assert default.apps == ("alpha", "beta") and heavy.apps == ("gamma",)

    views = run(
        page_views([stack.url(f"/{app}") for app in ("alpha", "beta", "gamma") for _ in range(12)], concurrency=4)
    )
    per_view, _ = executions_per_view(stack.executions(), views)
    assert per_view == 1.0
    ports_of = {}
    for e in stack.executions():
        ports_of.setdefault(e.app, set()).add(e.port)
    assert ports_of["alpha"] | ports_of["beta"] <= set(default.ports)
    assert ports_of["gamma"] <= set(heavy.ports)
    assert len(ports_of["gamma"]) == 2, "both workers of the heavy pool used"
    # Each pool's workers do not even know the other pool's apps.
    heavy_worker = local_target(stack.plan, heavy, heavy.ports[0])
    assert heavy_worker.endpoint.get_status("/alpha", 5) == 404
    assert heavy_worker.endpoint.get_status("/gamma", 5) == 200
    assert urllib.request.urlopen(stack.url(f"/healthz/{heavy.name}")).status == 200


def test_a_foreign_origin_is_refused(stacks, tmp_path):
    stack = stacks(counter_apps(tmp_path / "apps", ["counter"]), workers=1)
    with pytest.raises(PageViewError) as refused:
        run(page_view(stack.url("/counter"), origin="http://evil.example"))
    assert refused.value.stage == "websocket" and "403" in str(refused.value)
    assert run(page_view(stack.url("/counter"))).document.roots  # the worker still serves


def test_healthz_follows_the_workers_and_creates_no_session(stacks, tmp_path):
    stack = stacks(counter_apps(tmp_path / "apps", ["counter"]), workers=2)
    for _ in range(20):
        status, _, body = http_get(stack.url("/healthz"))
        assert (status, body) == (200, b"ok\n")
    assert stack.executions() == [], "probing /healthz created Bokeh sessions"

    rpc = stack.rpc()
    rpc.stopProcessGroup("bokeh_default")
    status, _, body = http_get(stack.url("/healthz"))
    assert status == 503 and b"unavailable" in body
    rpc.startProcessGroup("bokeh_default")
    wait_for(lambda: http_get(stack.url("/healthz"))[0] == 200, 30, "/healthz to say 200 again")
    assert run(page_view(stack.url("/counter"))).document.roots


def test_kill_9_of_a_worker_costs_no_page_view(stacks, tmp_path):
    stack = stacks(counter_apps(tmp_path / "apps", ["counter"]), workers=3)
    url = stack.url("/counter")
    victim = stack.workers()[0]
    rpc = stack.rpc()
    restart: dict[str, float] = {}

    def kill_then_time_the_restart() -> None:
        os.kill(victim.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        wait_for(
            lambda: rpc.getProcessInfo(f"bokeh_default:{victim.name}")["pid"] not in (0, victim.pid),
            10,
            "supervisord to start the worker again",
            interval=0.02,
        )
        restart["spawned"] = time.monotonic() - killed_at

    stream, _ = run(during_page_views(url, 8.0, kill_then_time_the_restart))
    assert stream.done >= 40
    assert stream.failures == [], f"{stream}: {stream.failures[:3]}"
    assert restart["spawned"] < 2.0, f"supervisord started the worker again {restart['spawned']:.1f} s after kill -9"

    # Once it answers its probe, nginx sends it new sessions at once (no fail_timeout to wait out).
    back = wait_for(
        lambda: next((w for w in stack.workers() if w.name == victim.name and w.probe_ok), None), 30, "the probe"
    )
    answered_at = time.monotonic()

    async def first_view_on(port: int) -> float:
        while True:
            views = await asyncio.gather(*(page_view(url) for _ in range(4)))
            if any(v.document.get_model_by_name("worker").text.endswith(str(port)) for v in views):
                return time.monotonic() - answered_at

    first_session_after = run(asyncio.wait_for(first_view_on(back.port), 10))
    print(
        f"\nkill -9 under load: {stream}; running again after {restart['spawned']:.2f} s, "
        f"new sessions {first_session_after:.2f} s after it answered its probe"
    )
    assert first_session_after < 2.0


def test_closed_lifecycle_sessions_leave_nothing_behind(stacks):
    # Short session reaping so the test need not wait Bokeh's default 15 s.
    stack = stacks(SHIPPED_APPS, workers=1, session={"unused_lifetime_ms": 1000, "check_unused_ms": 500})
    url = stack.url("/lifecycle")

    def census() -> str:
        """What the worker holds besides the census sessions (this look and the ones before it)."""
        return run(page_view(f"{url}?census")).document.select_one({"css_classes": ["lifecycle-stats"]}).text

    async def batch(count: int) -> str:
        """`count` tabs that render the page (their callbacks start), then close."""
        views = [await open_page(url, document_ready=True) for _ in range(count)]
        await asyncio.sleep(1.2)  # every callback runs at least twice (period 500 ms)
        live = (await page_view(url)).document.select_one({"css_classes": ["lifecycle-stats"]}).text
        for view in views:
            view.close()
        return live

    for _ in range(10):  # 200 sessions in all
        while_open = run(batch(20))
        live_callbacks = int(re.search(r"(\d+) live update callbacks?", while_open).group(1))
        assert live_callbacks >= 20, while_open
    said = [""]

    def nothing_left() -> bool:
        said[0] = census()
        return ": 0 sessions, 0 live update callbacks, 0 documents in memory" in said[0]

    try:
        wait_for(nothing_left, 60, "the closed sessions to be discarded", interval=1)
    except AssertionError as timeout:
        raise AssertionError(f"{timeout}; the worker says: {said[0]}") from None


def bokeh_stack_cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bokeh_stack", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def test_reload_restarts_workers_one_at_a_time_with_no_failed_page_view(stacks, tmp_path):
    stack = stacks(counter_apps(tmp_path / "apps", ["counter"]), workers=3)
    before = {w.name: w.pid for w in stack.workers()}

    stream, reload = run(
        during_page_views(
            stack.url("/counter"), 12.0, lambda: bokeh_stack_cli("reload", "--settings", str(stack.settings_file))
        )
    )
    output, _ = reload.communicate(timeout=90)
    assert reload.returncode == 0, output
    print(f"\nreload under load: {stream}")
    assert stream.failures == [], f"{stream}: {stream.failures[:3]}"
    after = {w.name: w.pid for w in stack.workers()}
    assert after.keys() == before.keys() and all(after[n] != before[n] for n in before), "every worker restarted"
    assert all(w.state in ("STARTING", "RUNNING") and w.probe_ok for w in stack.workers()), stack.workers()

    # Each worker stops only once the one before it serves again: supervisord's log says when a worker stopped,
    # the worker's own log when it listens again.
    log_dir = stack.settings.log_dir
    stops = [
        (line[:23], line.split()[4])
        for line in (log_dir / "supervisord.log").read_text().splitlines()
        if "INFO stopped: bokeh_default_" in line
    ]
    assert [name for _, name in stops] == sorted(before), stops
    for (_, name), (next_stop, _) in zip(stops, stops[1:], strict=False):
        listening = [
            line.split()[1] + " " + line.split()[2]
            for line in (log_dir / f"{name}.log").read_text().splitlines()
            if LISTENING in line
        ]
        assert listening[-1] < next_stop, f"{name} listened again at {listening[-1]}, after the next stop {next_stop}"


def test_apply_changes_only_what_changed(stacks, tmp_path):
    stack = stacks(counter_apps(tmp_path / "apps", ["counter"]), workers=2)

    def apply() -> str:
        proc = bokeh_stack_cli("apply", "--stateful", "--settings", str(stack.settings_file))
        output, _ = proc.communicate(timeout=90)
        assert proc.returncode == 0, output
        return output.strip().splitlines()[-1]

    assert apply() == "changed=no comment='up to date'"
    before = {w.name: w.pid for w in stack.workers()}
    settings = yaml.safe_load(stack.settings_file.read_text())
    stack.settings_file.write_text(yaml.safe_dump({**settings, "session": {"keep_alive_ms": 20000}}))
    changed = apply()
    assert changed.startswith("changed=yes") and "reloaded nginx" in changed
    assert all(f"restarted bokeh_default_{port}" in changed for port in stack.settings.worker_ports)
    args = stack.plan.args_file(stack.settings.pools[0]).read_text().splitlines()
    assert args[args.index("--keep-alive") + 1] == "20000"
    assert "proxy_read_timeout 60s;" in stack.plan.nginx_site_conf.read_text()
    assert all(w.pid != before[w.name] for w in stack.workers())
    assert run(page_view(stack.url("/counter"))).document.roots
    assert apply() == "changed=no comment='up to date'"
