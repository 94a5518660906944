"""A session resumed in another worker comes back as its user left it: two Bokeh servers in this process stand for
two workers sharing a store. A tab changes widgets, a plot's range and clicks a button on the first; the first goes
away; the tab's websocket, with the same token, reaches the second, which rebuilds the session from the record."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from bokeh.application import Application
from bokeh.application.handlers.function import FunctionHandler
from bokeh.events import ButtonClick
from bokeh.layouts import column
from bokeh.models import Button, ColumnDataSource, Div, Select, Slider
from bokeh.plotting import figure
from bokeh.server.server import Server
from bokeh.util.token import generate_jwt_token, get_session_id, get_token_payload

from bokeh_stack import resume
from bokeh_stack.config import topology
from bokeh_stack.config.plan import RunPlan
from bokeh_stack.config.secret import ensure_secret
from bokeh_stack.config.settings import load
from bokeh_stack.patches import fixes, patching
from bokeh_stack.provisioning import render as rendering
from bokeh_stack.resume import record, sessions
from bokeh_stack.resume.stores import DirectoryStore
from harness.pageview import connect_and_pull, open_page
from harness.stack import SHIPPED_APPS, free_ports, port_free, wait_for


def dashboard(doc) -> None:
    """Widgets and a plot, and what the app derives from them (the data, a text, a count it keeps itself)."""
    slider = Slider(start=0, end=10, value=1, step=1, title="n", name="n")
    kind = Select(options=["squares", "cubes"], value="squares", name="kind")
    button = Button(label="add", name="add")
    text = Div(name="derived")
    source = ColumnDataSource(data={"x": [], "y": []}, name="data")
    plot = figure(name="plot")
    plot.line("x", "y", source=source)
    clicks = [0]

    def derive() -> None:
        power = 2 if kind.value == "squares" else 3
        xs = list(range(slider.value + 1))
        source.data = {"x": xs, "y": [x**power for x in xs]}
        text.text = f"{kind.value} up to {slider.value}, {clicks[0]} clicks"

    def click(event) -> None:
        clicks[0] += 1
        derive()

    slider.on_change("value", lambda attr, old, new: derive())
    kind.on_change("value", lambda attr, old, new: derive())
    button.on_event(ButtonClick, click)
    derive()
    doc.add_root(column(slider, kind, button, text, plot))


class Workers:
    """Bokeh servers in this process, each standing for a worker, on loopback ports; all stopped at the end."""

    def __init__(self) -> None:
        self.servers: list[Server] = []

    def start(self) -> str:
        port = free_ports(1)
        app = Application(FunctionHandler(dashboard))
        server = Server({"/app": app}, port=port, address="127.0.0.1", allow_websocket_origin=[f"127.0.0.1:{port}"])
        server.start()
        self.servers.append(server)
        return f"http://127.0.0.1:{port}/app"

    def stop(self, url: str) -> None:
        server = self._server(url)
        server.stop()
        server.unlisten()
        self.servers.remove(server)

    async def drain(self, url: str) -> None:
        """What a restart does to a worker (fixes.drain_on_sigterm): it closes every websocket itself, then stops."""
        server = self._server(url)
        await fixes.close_websockets([h for h in fixes.open_websockets() if h.application is server._tornado], 10)
        self.stop(url)

    def app_context(self, url: str):
        return self._server(url)._tornado._applications["/app"]

    def _server(self, url: str) -> Server:
        return next(s for s in self.servers if f":{s.port}/" in url)


class RedisServer:
    """A real redis-server on a free loopback port, started as the stack starts one (bokeh_stack/daemons/redis.py:
    its config rendered from the settings, its password from a file), keeping nothing on disk; stopped by PID."""

    def __init__(self, directory: Path) -> None:
        self.port = free_ports(1)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        password_file = directory / "redis-password"
        self.password = ensure_secret(password_file, environ={})
        self.plan = RunPlan(load(environ={}, overrides={
            "apps_dir": str(SHIPPED_APPS), "runtime_dir": str(directory / "run"), "redis": {"port": self.port},
            "session": {"redis_password_file": str(password_file)},
        }))  # fmt: skip
        conf = rendering.render_redis(self.plan)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", topology.MODULES["redis"], str(conf), str(self.plan.redis_dir), str(password_file)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_for(lambda: not port_free(self.port), 10, "redis-server to listen")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["directory", pytest.param("redis", marks=pytest.mark.redis)])
def workers(request, tmp_path: Path) -> Iterator[Workers]:
    fixes.apply(fixes.FIXES + sessions.FIXES)
    if request.param == "redis":
        redis = request.getfixturevalue("redis_server")
        sessions.configure(redis.url, 1 << 20, [], password=redis.password)
    else:
        sessions.configure(str(tmp_path / "sessions"), 1 << 20, [])
    counted: list[tuple[str, str]] = []
    patching._replace(sessions, "outcome", lambda app, result: counted.append((app, result)))
    running = Workers()
    running.outcomes = counted
    try:
        yield running
    finally:
        for server in list(running.servers):
            server.stop()
            server.unlisten()
        sessions.config.store.close()
        sessions.config.store = None
        patching.undo()


def run(coroutine):
    return asyncio.get_event_loop_policy().get_event_loop().run_until_complete(coroutine)


def _model(doc, name: str):
    return doc.select_one({"name": name})


async def _record_lines(session_id: str, at_least: int, timeout_s: float = 5.0) -> list[dict]:
    """The session's record once it holds `at_least` messages (writes go out from their own thread)."""
    store = sessions.config.store
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        lines = await store.load(record.key(session_id)) or []
        if len(lines) - 1 >= at_least:
            return [json.loads(line) for line in lines]
        assert asyncio.get_running_loop().time() < deadline, f"{len(lines)} lines in the record: {lines}"
        await asyncio.sleep(0.02)


async def _use(url: str):
    """A tab's user: DocumentReady, a slider dragged to 7 (three steps), cubes chosen, two clicks, a zoom."""
    tab = await open_page(url, document_ready=True)
    doc = tab.document
    for value in (3, 5, 7):
        await tab.change(_model(doc, "n"), value=value)
    await tab.change(_model(doc, "kind"), value="cubes")
    for _ in range(2):
        await tab.send_event(ButtonClick(_model(doc, "add")))
    plot = _model(doc, "plot")
    await tab.change(plot.x_range, start=2.0, end=5.0)
    return tab


async def _left_on(url: str, workers: Workers):
    """A tab used on the worker at `url`, whose record holds all of it: ready, the slider's run (kept as its last
    value), cubes, two clicks, the range. The tab's connection then drops and that worker stops."""
    tab = await _use(url)
    await _record_lines(tab.session_id, at_least=6)
    tab.close()
    workers.stop(url)
    return tab


async def _reconnect(url: str, token: str):
    ws, _, doc = await connect_and_pull(url, token, {"Origin": url.rsplit("/", 1)[0]}, timeout=10)
    ws.close()
    return doc


def test_a_tab_comes_back_as_its_user_left_it_on_another_worker(workers):
    first, second = workers.start(), workers.start()

    async def scenario():
        tab = await _left_on(first, workers)
        return tab, await _reconnect(second, tab.token)

    tab, doc = run(scenario())
    assert _model(doc, "n").value == 7 and _model(doc, "kind").value == "cubes"
    assert _model(doc, "derived").text == "cubes up to 7, 2 clicks", "the app's callbacks ran again, in order"
    assert _model(doc, "data").data["y"] == [x**3 for x in range(8)]
    assert (_model(doc, "plot").x_range.start, _model(doc, "plot").x_range.end) == (2.0, 5.0)
    assert {m.id for m in doc.models} == {m.id for m in tab.document.models}, "the same model ids in both workers"
    session = workers.app_context(second).get_session(tab.session_id)
    assert resume.resumed(session.document) == resume.Resumed(messages=6, ready=True)
    assert session.__dict__[sessions._RECORDER].count == 6, "recording goes on after the 6, replaying none again"
    assert workers.outcomes == [("/app", "resumed")]


def test_a_worker_that_drains_hands_each_tab_over_with_all_its_user_did(workers, request):
    """A restart drains a worker: it closes each websocket itself, and the tab's websocket reaches another worker
    a few milliseconds later, maybe with a slider still being dragged (a run of changes, written MERGE_WINDOW_S
    after it starts). The draining worker writes what it holds before it closes, and nothing after: the next worker
    resumes all of it and writes on, and the record stays readable for the worker after that. With the directory
    store the draining worker's disk is slow, and the next workers read through a store of their own, as a worker
    in another process does: the tab may go only once its record is written."""
    first, second, third = workers.start(), workers.start(), workers.start()
    draining_store = sessions.config.store

    async def scenario():
        tab = await open_page(first, document_ready=True)
        for value in (3, 5, 7):
            await tab.change(_model(tab.document, "n"), value=value)
        session = workers.app_context(first).get_session(tab.session_id)
        deadline = asyncio.get_running_loop().time() + 5
        while _model(session.document, "n").value != 7:  # the worker has it: what the user did
            assert asyncio.get_running_loop().time() < deadline, "the worker never got the slider's last value"
            await asyncio.sleep(0.01)
        closed = asyncio.ensure_future(tab.closed_by_the_server())
        slow_disk = isinstance(draining_store, DirectoryStore)
        if slow_disk:
            _hold_the_store(request, 0.3)
        await workers.drain(first)
        if slow_disk:
            sessions.config.store = DirectoryStore(draining_store.directory)  # the next workers' own
        await asyncio.wait_for(closed, 10)
        moved = await tab.reconnect(second)  # at once, as BokehJS does
        on_second = _model(moved.document, "n").value
        await moved.change(_model(moved.document, "kind"), value="cubes")
        await _record_lines(tab.session_id, at_least=3)  # DocumentReady, the slider, and cubes
        moved.close()
        workers.stop(second)
        return on_second, await _reconnect(third, tab.token)

    try:
        on_second, doc = run(scenario())
    finally:
        if draining_store is not sessions.config.store:
            draining_store.close()
    assert on_second == 7, "the slider's run was written before the tab was handed over"
    assert _model(doc, "derived").text == "cubes up to 7, 0 clicks", "what each worker kept, resumed on the third"
    assert workers.outcomes == [("/app", "resumed"), ("/app", "resumed")]


def test_only_the_token_that_made_a_record_resumes_it(workers):
    first, second = workers.start(), workers.start()

    async def scenario():
        tab = await _left_on(first, workers)
        # Same session id, another token (a later expiry): a fresh session, the app's defaults.
        payload = get_token_payload(tab.token)
        other = generate_jwt_token(get_session_id(tab.token), expiration=600, extra_payload={})
        assert payload != get_token_payload(other)
        return await _reconnect(second, other)

    doc = run(scenario())
    assert _model(doc, "n").value == 1 and _model(doc, "derived").text == "squares up to 1, 0 clicks"
    assert workers.outcomes == [("/app", "fresh")]


def _hold_the_store(request, seconds: float) -> None:
    """Keep the store from answering for a while, for real: the directory store's one writer thread busy; Redis
    holding every client's commands (CLIENT PAUSE)."""
    store = sessions.config.store
    if isinstance(store, DirectoryStore):
        store._writer.submit(time.sleep, seconds)
    else:
        redis = request.getfixturevalue("redis_server")
        paused = subprocess.run(
            ["redis-cli", "-p", str(redis.port), "-a", redis.password, "--no-auth-warning",
             "CLIENT", "PAUSE", str(int(seconds * 1000)), "ALL"], capture_output=True, text=True, timeout=10,
        )  # fmt: skip
        assert paused.stdout.strip() == "OK", paused


@pytest.mark.parametrize("how", ["slow", "down"])
def test_a_store_that_fails_costs_the_resume_not_the_page(workers, request, how):
    first, second = workers.start(), workers.start()

    async def scenario():
        tab = await _left_on(first, workers)
        if how == "slow":
            _hold_the_store(request, 2.0)
        elif isinstance(sessions.config.store, DirectoryStore):  # gone from under the workers (an unmounted disk)
            directory = Path(sessions.config.store.directory)
            directory.rename(directory.with_name("elsewhere"))
            directory.write_text("not a directory")
        else:
            request.getfixturevalue("redis_server").stop()
        began = time.monotonic()
        doc = await _reconnect(second, tab.token)
        return doc, time.monotonic() - began

    doc, seconds = run(scenario())
    assert _model(doc, "n").value == 1, "a fresh session"
    assert workers.outcomes == [("/app", "failed")]
    assert seconds < 1.5, f"the page waited {seconds:.2f} s for the store"


def test_a_record_past_its_bound_is_not_resumed(workers):
    sessions.config.max_bytes = 600  # the owner line and a message or two
    first, second = workers.start(), workers.start()

    async def scenario():
        tab = await _use(first)
        lines = await _record_lines(tab.session_id, at_least=1)
        deadline = asyncio.get_running_loop().time() + 5
        while not lines[-1].get("overflow"):
            assert asyncio.get_running_loop().time() < deadline, lines
            lines = await _record_lines(tab.session_id, at_least=1)
        tab.close()
        workers.stop(first)
        return await _reconnect(second, tab.token)

    doc = run(scenario())
    assert _model(doc, "n").value == 1, "a fresh session, not half of what the user did"
    assert workers.outcomes == [("/app", "failed")]


def test_a_record_the_app_cannot_replay_is_dropped(workers):
    """As when an app builds other models than it did before (a random layout): a message naming a model the new
    build does not have stops the replay; the tab gets what was replayed so far, and the record goes."""
    first, second = workers.start(), workers.start()

    async def scenario():
        tab = await _left_on(first, workers)
        stranger = '{"events":[{"kind":"ModelChanged","model":{"id":"p000000-999"},"attr":"value","new":3}]}'
        sessions.config.store.append(record.key(tab.session_id), [record.Entry(stranger).line(7)], expires=2e9)
        doc = await _reconnect(second, tab.token)
        deadline = asyncio.get_running_loop().time() + 5
        while await sessions.config.store.load(record.key(tab.session_id)):
            assert asyncio.get_running_loop().time() < deadline, "the record is still there"
            await asyncio.sleep(0.02)
        return doc

    doc = run(scenario())
    assert _model(doc, "derived").text == "cubes up to 7, 2 clicks", "what came before the stranger, replayed"
    assert workers.outcomes == [("/app", "failed")]


def test_a_tab_that_leaves_leaves_no_record(workers):
    url = workers.start()

    async def scenario():
        tab = await _use(url)
        await _record_lines(tab.session_id, at_least=6)
        tab.close(1001)  # the browser left the page: BokehJS will not come back
        deadline = asyncio.get_running_loop().time() + 5
        while await sessions.config.store.load(record.key(tab.session_id)):
            assert asyncio.get_running_loop().time() < deadline, "the record is still there"
            await asyncio.sleep(0.02)

    run(scenario())


def test_a_record_is_its_users_alone_and_goes_with_its_token(tmp_path):
    store = DirectoryStore(tmp_path / "sessions")
    try:
        store.append("k", [b"line"], expires=2e9)
        store.append("gone", [b"line"], expires=1.0)
        assert run(store.load("k")) == [b"line"]
        assert run(store.load("gone")) is None, "past its token's expiry"
        assert store.prune() == 1 and not (tmp_path / "sessions" / "gone").exists()
        assert (tmp_path / "sessions").stat().st_mode & 0o777 == 0o700
        assert (tmp_path / "sessions" / "k").stat().st_mode & 0o777 == 0o600
    finally:
        store.close()


def test_resume_fits_the_pinned_bokeh():
    assert fixes.check(sessions.FIXES) == {}
