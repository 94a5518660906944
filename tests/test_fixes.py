"""The worker-side fixes (patches/fixes.py): each one takes effect on the pinned Bokeh, and a fix whose target
changed stops the worker with a message naming it. In-process tests undo what they applied; the others run real
workers (`python -m bokeh_stack.worker`, with the fixes and --plain) on loopback ports."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import types
from pathlib import Path

import pytest
from bokeh.application import Application
from bokeh.application.handlers.function import FunctionHandler
from bokeh.document.modules import DocumentModuleManager
from bokeh.models import Div
from bokeh.server.server import Server

from bokeh_stack.config import limits, topology
from bokeh_stack.config.expect import unmet
from bokeh_stack.daemons import worker
from bokeh_stack.identity import USER_HEADER
from bokeh_stack.patches import fixes, hardening, patching
from harness.pageview import connect_and_pull, open_page
from harness.stack import TEST_APPS, free_ports, wait_for


@pytest.fixture
def undo():
    """What a test applies to Bokeh in this process is put back after it."""
    yield
    patching.undo()


def test_every_fix_fits_the_pinned_bokeh():
    assert fixes.check() == {}
    assert fixes.check(hardening.FIXES) == {}
    from bokeh_stack.daemons import app_check
    from bokeh_stack.provisioning import render

    assert unmet(app_check.EXPECTS) == [] and unmet(render.BOKEH_EXPECTS) == []


def test_a_worker_log_record_is_cut_whatever_a_client_sent():
    factory = logging.getLogRecordFactory()
    records = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(handler.format(record))
    logger = logging.getLogger("bokeh_stack.test_bounded")
    logger.addHandler(handler)
    try:
        hardening.bounded_log_records()
        logger.error("got %r", "x" * 100_000)
        try:
            raise ValueError("y" * 100_000)
        except ValueError:
            logger.exception("failed on %s", "z" * 10)
    finally:
        logging.setLogRecordFactory(factory)
        logger.removeHandler(handler)
    cut, failed = records
    assert len(cut) < hardening.LOG_LINE_BYTES + 100 and "[cut: 100006 characters in all]" in cut
    assert failed.startswith("failed on zzzzzzzzzz\nTraceback") and len(failed) < hardening.LOG_TRACEBACK_BYTES + 200


def test_a_fix_whose_target_changed_stops_the_worker_naming_it(monkeypatch, tmp_path, undo):
    from bokeh import __version__ as bokeh_version
    from bokeh.document.document import Document
    from bokeh.server.contexts import ApplicationContext

    monkeypatch.setattr(Document, "destroy", lambda self, session: None)  # a Bokeh that no longer calls gc.collect
    monkeypatch.delattr(ApplicationContext, "_cleanup_sessions")
    changed = fixes.check()
    assert changed == {
        "coalesced_gc": ["bokeh.document.document:Document.destroy no longer uses gc, collect"],
        "interleaved_discards": ["bokeh.server.contexts:ApplicationContext._cleanup_sessions is gone"],
        "cycles_broken_on_destroy": ["bokeh.document.document:Document.destroy no longer uses models, destroy"],
    }
    args = tmp_path / "args"
    args.write_text("serve\n")
    with pytest.raises(SystemExit) as stopped:
        worker.main([str(args), "5000"])
    message = str(stopped.value.code)
    assert f"do not fit Bokeh {bokeh_version}" in message and "coalesced_gc:" in message
    assert "interleaved_discards:" in message and "worker_fix_mismatch: warn" in message
    assert patching._replaced == [], "no fix is applied when one does not fit"
    # worker_fix_mismatch: warn runs the fixes that fit, without the others.
    left_out = ["coalesced_gc", "cycles_broken_on_destroy", "interleaved_discards"]
    assert sorted(fixes.apply(on_mismatch="warn")) == left_out
    assert not isinstance(sys.modules["bokeh.document.document"].gc, fixes.CoalescedCollector)
    assert ApplicationContext._discard_session.__name__ == "_discard_session"
    assert DocumentModuleManager.destroy.__module__ == fixes.__name__


def test_websocket_frames_are_sent_without_nagle_delay(undo):
    fixes.websocket_nodelay()
    port = free_ports(1)
    app = Application(FunctionHandler(lambda doc: doc.add_root(Div(text="hi"))))
    server = Server({"/app": app}, port=port, address="127.0.0.1", allow_websocket_origin=[f"127.0.0.1:{port}"])

    async def connect_and_look() -> list[int]:
        server.start()
        view = await open_page(f"http://127.0.0.1:{port}/app")
        try:
            handlers = [connection._socket for connection in server._tornado._clients]
            return [h.ws_connection.stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for h in handlers]
        finally:
            view.close()

    try:
        flags = server.io_loop.asyncio_loop.run_until_complete(connect_and_look())
    finally:
        server.stop()
        server.unlisten()
    assert flags and all(flags), "the worker's websocket socket lacks TCP_NODELAY"


def test_a_destroyed_document_is_collected_later_with_its_batch(undo):
    import bokeh.document.document as document_module
    from bokeh.document import Document

    fixes.coalesced_gc()
    document_module.gc.delay_s = 0.05

    async def destroy_three() -> tuple[int, int, int]:
        full, young = gc.get_stats()[2]["collections"], gc.get_stats()[fixes.YOUNG]["collections"]
        for _ in range(3):
            doc, session = Document(), lambda event: None  # Bokeh's ServerSession watches its document
            doc.on_change(session)
            doc.destroy(session)
        during = gc.get_stats()[fixes.YOUNG]["collections"] - young
        await asyncio.sleep(0.3)
        return during, gc.get_stats()[fixes.YOUNG]["collections"] - young, gc.get_stats()[2]["collections"] - full

    gc.disable()
    try:
        during, after, full = asyncio.run(destroy_three())
    finally:
        gc.enable()
    assert (during, after, full) == (0, 1, 0), "one young collection later, none of the whole heap"


def test_a_destroyed_document_leaves_next_to_nothing_for_the_collector(undo):
    """Reference counting frees a discarded dashboard once its models are unlinked: what a collection would still
    have to find is under a tenth of what plain Bokeh leaves to its full collection."""
    from bokeh.document import Document

    from bokeh_stack.patches import page_cost
    from tests.bokeh_examples import sliders, widgets

    def left_for_the_collector() -> int:
        gc.collect()
        gc.disable()
        try:
            for build in (sliders, widgets):
                doc, session = Document(), lambda event: None
                build(doc)
                doc.on_change(session)
                doc.destroy(session)
            del doc
            return gc.collect()
        finally:
            gc.enable()

    plain = left_for_the_collector()
    fixes.apply(page_cost.FIXES)
    fixed = left_for_the_collector()
    assert plain > 500 and fixed < plain / 10, (plain, fixed)


def test_a_discarded_module_is_cleaned_up_without_a_heap_scan(monkeypatch, undo):
    from bokeh.document import Document

    scans = []
    monkeypatch.setattr(gc, "get_referrers", lambda *objs: scans.append(objs) or [])
    fixes.module_cleanup_without_referrer_scan()
    doc = Document()
    name = "bokeh_app_under_test"
    module = types.ModuleType(name)
    module.value = 1
    doc.modules.add(module)
    doc.modules.destroy()
    assert scans == [], "Bokeh's referrer scan ran"
    assert name not in sys.modules and module.__dict__ == {}


class _Session:
    """Just what ApplicationContext._discard_session touches of a session with no open websocket."""

    id, connection_count, expiration_blocked_count, milliseconds_since_last_unsubscribe = "s", 0, 1, 0
    destroyed = False

    async def with_document_locked(self, function) -> None:
        function()

    def destroy(self) -> None:
        self.destroyed = True


def test_requests_run_between_two_discarded_sessions(undo):
    from bokeh.server.contexts import ApplicationContext

    async def discard_while_a_request_waits() -> tuple[bool, bool]:
        session = _Session()
        context = types.SimpleNamespace(
            _sessions={"s": session}, _session_contexts={"s": types.SimpleNamespace(destroyed=False)}
        )
        request_ran = asyncio.Event()
        asyncio.get_running_loop().call_soon(request_ran.set)
        await ApplicationContext._discard_session(context, session, lambda s: True)
        return session.destroyed, request_ran.is_set()

    assert asyncio.run(discard_while_a_request_waits()) == (True, False), "plain Bokeh does not yield"
    fixes.interleaved_discards()
    assert asyncio.run(discard_while_a_request_waits()) == (True, True)


def test_discarded_sessions_share_one_deferred_collection():
    collector = fixes.CoalescedCollector(delay_s=0.05)
    assert collector.collect() > -1  # outside an event loop: an immediate, ordinary collection

    async def discard_a_batch() -> tuple[int, int]:
        nonlocal young
        before, young_before = gc.get_stats()[2]["collections"], gc.get_stats()[fixes.YOUNG]["collections"]
        for _ in range(50):
            collector.collect()  # what Document.destroy calls, once per discarded session
        during = gc.get_stats()[2]["collections"] - before
        await asyncio.sleep(0.2)
        young = gc.get_stats()[fixes.YOUNG]["collections"] - young_before
        return during, gc.get_stats()[2]["collections"] - before

    young = 0
    gc.disable()  # only the collections asked for are counted
    try:
        during, after = asyncio.run(discard_a_batch())
    finally:
        gc.enable()
    assert during == 0, "a collection ran inside the batch"
    assert after == 0, "a collection of the whole heap ran for the batch"
    assert young == 1, f"{young} young collections for one batch of 50 discards"


PATCHES = """
import json, sys
from bokeh.document import Document
from bokeh.models import ColumnDataSource, Title
from bokeh.plotting import figure
from bokeh.protocol import Protocol
from bokeh_stack.patches import fixes

doc = Document()
source = ColumnDataSource(data={"x": [1.0], "y": [2.0]})
plot = figure()
plot.line("x", "y", source=source)
doc.add_root(plot)
doc.models.flush_synced()  # the client has the document
events = []
doc.on_change(lambda event: events.append(event))
source.stream({"x": [3.0], "y": [4.0]})
plot.title = Title(text="new")  # a model the client has not seen: it must go in full, not as a reference
if sys.argv[1] == "fixed":
    fixes.references_on_demand()
print(json.dumps([json.loads(Protocol().create("PATCH-DOC", [e]).content_json) for e in events]))
"""


def test_patches_serialized_with_references_on_demand_say_the_same():
    plain, fixed = (
        json.loads(subprocess.run([sys.executable, "-c", PATCHES, mode], capture_output=True, check=True).stdout)
        for mode in ("plain", "fixed")
    )
    assert "new" in json.dumps(fixed[1]), "the new Title was sent as a bare reference"

    def ids_masked(value):
        return json.loads(re.sub(r'"p\d+"', '"p"', json.dumps(value)))

    assert ids_masked(fixed) == ids_masked(plain)


class Worker:
    """`python -m bokeh_stack.worker` as supervisord runs it, on a loopback port, stopped by its process group."""

    def __init__(
        self,
        tmp: Path,
        apps: list[Path],
        secret: str,
        plain: bool = False,
        extra: tuple[str, ...] = (),
        flags: tuple[str, ...] = (),
    ) -> None:
        self.port = free_ports(1)
        args = tmp / f"worker-{self.port}.args"
        origin = f"127.0.0.1:{self.port}"
        lines = ["serve", *map(str, apps), "--address", "127.0.0.1", "--port", "{port}"]
        lines += ["--allow-websocket-origin", origin, "--session-ids", "signed", "--disable-index-redirect"]
        lines += ["--use-xheaders", *extra]  # as behind nginx: X-Real-IP is the client
        args.write_text("\n".join(lines) + "\n")
        env = {**os.environ, "BOKEH_SECRET_KEY": secret, "BOKEH_SIGN_SESSIONS": "true"}
        command = [sys.executable, "-m", "bokeh_stack.worker", *(["--plain"] if plain else []), *flags, str(args)]
        self.log = tmp / f"worker-{self.port}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [*command, str(self.port)], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_for(lambda: self.get("/")[0] == 200 or self.proc.poll() is not None, 30, "the worker to answer")
        assert self.proc.poll() is None, self.log.read_text()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str, headers: dict | None = None) -> tuple[int | None, bytes]:
        """Status and body of a GET; None when the worker hung up without an answer."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=10) as conn:
                lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}", "Connection: close"]
                lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
                conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
                answer = b""
                while chunk := conn.recv(65536):
                    answer += chunk
        except OSError:
            return None, b""
        if not answer.startswith(b"HTTP/1.1 "):
            return None, answer
        return int(answer.split()[1]), answer

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


@pytest.fixture(scope="module")
def broken_and_ticker(tmp_path_factory) -> list[Path]:
    apps = tmp_path_factory.mktemp("apps")
    (apps / "broken").mkdir()
    (apps / "broken" / "main.py").write_text("raise RuntimeError('the instrument is offline')\n")
    return [apps / "broken", TEST_APPS / "ticker"]


@pytest.fixture(scope="module")
def fixed_and_plain(tmp_path_factory, broken_and_ticker):
    """A worker with the fixes and a plain one, sharing one secret (as the workers of a stack do)."""
    tmp, secret = tmp_path_factory.mktemp("workers"), "s" * 48
    started = []
    try:
        started.append(Worker(tmp, broken_and_ticker, secret))
        started.append(Worker(tmp, broken_and_ticker, secret, plain=True))
        yield started
    finally:
        for w in started:
            w.stop()


def test_an_app_that_raises_answers_500_instead_of_a_blank_page(fixed_and_plain):
    fixed, plain = fixed_and_plain
    status, page = fixed.get("/broken")
    assert status == 500
    assert b"<strong>broken</strong> raised an error" in page and b"worker log" in page
    assert b"the instrument is offline" in page and b"Traceback" in page, "a browser on this machine sees why"
    status, page = fixed.get("/broken", {"X-Real-IP": "203.0.113.7"})
    assert status == 500 and b"<strong>broken</strong>" in page
    assert b"the instrument is offline" not in page and b"Traceback" not in page, "the public sees no traceback"
    assert plain.get("/broken")[0] == 200, "plain Bokeh serves the broken session as a blank page"
    assert fixed.get("/ticker")[0] == 200


def test_request_headers_as_large_as_nginx_passes_reach_the_worker(fixed_and_plain):
    fixed, plain = fixed_and_plain
    nginx_limit = limits.HEADER_BUFFERS * limits.HEADER_BUFFER_KB * 1024
    headers = {f"X-Large-{i}": "x" * (limits.HEADER_BUFFER_KB * 1024 - 100) for i in range(limits.HEADER_BUFFERS)}
    assert sum(len(k) + len(v) for k, v in headers.items()) < nginx_limit
    assert fixed.get("/", headers)[0] == 200
    assert plain.get("/", headers)[0] != 200, "tornado's own 64 KiB limit refuses them"


def test_a_session_rebuilt_from_its_token_gets_document_ready(fixed_and_plain):
    """A tab whose worker restarted reconnects to another one with its token: that worker builds the session
    afresh and, as the page is already rendered, starts it (the ticker streams from DocumentReady on)."""
    fixed, plain = fixed_and_plain

    async def page_on_plain_websocket_on_fixed():
        from tornado.httpclient import AsyncHTTPClient

        page = await AsyncHTTPClient().fetch(plain.url("/ticker"))
        token = re.search(rb'"token"\s*:\s*"([A-Za-z0-9_.\-=]+)"', page.body).group(1).decode()
        headers = {"Origin": f"http://127.0.0.1:{fixed.port}"}
        ws, receiver, document = await connect_and_pull(fixed.url("/ticker"), token, headers, timeout=10)
        try:
            from harness.pageview import _read_message

            message = await asyncio.wait_for(_read_message(ws, receiver, fixed.url("/ticker")), 10)
            return message.msgtype
        finally:
            ws.close()

    assert asyncio.run(page_on_plain_websocket_on_fixed()) == "PATCH-DOC", "the rebuilt session did not start"


def test_sigterm_closes_every_websocket_cleanly_then_exits(tmp_path, broken_and_ticker):
    w = Worker(tmp_path, broken_and_ticker, "s" * 48)
    try:

        async def open_then_terminate() -> int | None:
            view = await open_page(w.url("/ticker"))
            os.kill(w.proc.pid, signal.SIGTERM)
            while view._ws.protocol is not None and view._ws.close_code is None:
                if await view._ws.read_message() is None:
                    break
            return view._ws.close_code

        assert asyncio.run(open_then_terminate()) == 1001, "closed without a close frame (1006), or not at all"
        w.proc.wait(timeout=limits.STOP_WAIT_S)
    finally:
        w.stop()
    assert "closing 1 websockets, then shutting down" in w.log.read_text()


def test_the_listening_line_hooks_what_bokeh_offers():
    """bokeh_stack.worker logs where it listens through Serve.customize_server, reading Server.port/unix_socket."""
    from bokeh.command.subcommands.serve import Serve
    from bokeh.server.server import Server

    assert callable(Serve.customize_server)
    assert isinstance(Server.port, property) and isinstance(Server.unix_socket, property)
    assert isinstance(Server.address, property)


def _token(page: bytes) -> str:
    return re.search(rb'"token"\s*:\s*"([A-Za-z0-9_.\-=]+)"', page).group(1).decode()


async def _open_ws(w: Worker, token: str, user: str):
    """A websocket to the ticker app as nginx forwards it for `user` (USER_HEADER), or the HTTP status refusing it."""
    from tornado.httpclient import HTTPClientError, HTTPRequest
    from tornado.websocket import websocket_connect

    headers = {"Origin": f"http://127.0.0.1:{w.port}", USER_HEADER: user}
    request = HTTPRequest(f"ws://127.0.0.1:{w.port}/ticker/ws", headers=headers)
    try:
        return await websocket_connect(request, subprotocols=["bokeh", token])
    except HTTPClientError as e:
        return e.code


def test_a_client_neither_chooses_nor_joins_a_session_by_id(tmp_path):
    """A link carrying a session id (or a token) does not drop its visitor into the sender's session; an operator
    who allows client session ids still keeps every user out of sessions built for another (403)."""
    from bokeh.util.token import get_session_id

    secret, extra = "s" * 48, ("--include-headers", USER_HEADER)
    started = [Worker(tmp_path, [TEST_APPS / "ticker"], secret, extra=extra)]
    try:
        fixed = started[0]
        sent = _token(fixed.get("/ticker")[1])
        sender = get_session_id(sent)
        for path, headers in (
            (f"/ticker?bokeh-session-id={sender}", {}),
            ("/ticker", {"Bokeh-Session-Id": sender}),
            (f"/ticker?bokeh-token={sent}", {}),
        ):
            status, page = fixed.get(path, headers)
            assert status == 200 and get_session_id(_token(page)) != sender, f"{path} {headers}: joined the sender's"

        started.append(Worker(tmp_path, [TEST_APPS / "ticker"], secret, extra=extra, flags=("--client-session-ids",)))
        allowing = started[1]
        # bob's page on one worker; alice, on another that allows client session ids, opens a session of that id
        bob = _token(fixed.get("/ticker", {USER_HEADER: "bob"})[1])
        status, alices = allowing.get(f"/ticker?bokeh-session-id={get_session_id(bob)}", {USER_HEADER: "alice"})
        assert status == 200 and get_session_id(_token(alices)) == get_session_id(bob), "allowed: alice chose its id"
        assert allowing.get(f"/ticker?bokeh-session-id={get_session_id(bob)}", {USER_HEADER: "bob"})[0] == 403

        async def websockets():
            into_alices = await _open_ws(allowing, bob, "bob")
            bobs_as_alice = await _open_ws(fixed, bob, "alice")
            own = await _open_ws(fixed, bob, "bob")
            if not isinstance(own, int):
                own.close()
            return into_alices, bobs_as_alice, own

        into_alices, bobs_as_alice, own = asyncio.run(websockets())
        assert into_alices == 403, "bob's token into the session built for alice"
        assert bobs_as_alice == 403, "bob's token, alice's request"
        assert not isinstance(own, int), f"bob's own websocket: HTTP {own}"
        assert "this session was built for another user" in allowing.log.read_text()
    finally:
        for w in started:
            w.stop()


def test_a_signed_out_users_websockets_are_closed_by_the_revoke_endpoint(tmp_path):
    w = Worker(tmp_path, [TEST_APPS / "ticker"], "s" * 48, extra=("--include-headers", USER_HEADER))
    try:

        async def revoke_bob():
            pages = {u: _token(w.get("/ticker", {USER_HEADER: u})[1]) for u in ("bob", "alice")}
            sockets = {u: await _open_ws(w, token, u) for u, token in pages.items()}
            for ws in sockets.values():
                assert await asyncio.wait_for(ws.read_message(), 10) is not None  # the ACK
            answer = await topology.Endpoint("127.0.0.1", w.port).request(
                topology.route("revoke"), 5, body=json.dumps({"users": ["bob"]}).encode()
            )
            while (message := await asyncio.wait_for(sockets["bob"].read_message(), 10)) is not None:
                pass
            bob_code = sockets["bob"].close_code
            alice_open = sockets["alice"].protocol is not None and sockets["alice"].close_code is None
            sockets["alice"].close()
            bad = await topology.Endpoint("127.0.0.1", w.port).request(topology.route("revoke"), 5, body=b"not json")
            return json.loads(answer), bob_code, alice_open, bad, message

        answer, bob_code, alice_open, bad, _ = asyncio.run(revoke_bob())
        assert answer == {"closed": 1} and bob_code == 1008 and alice_open
        assert bad is None, "a bad request is refused (400)"
    finally:
        w.stop()


def test_workers_leave_document_checks_to_check_and_dev(undo, monkeypatch, caplog):
    """Bokeh's checks of each new document only log; a worker leaves them out (bokeh-stack check runs them), unless
    BOKEH_VALIDATE_DOC is set, as `up --dev` sets it."""
    from bokeh.plotting import figure

    from bokeh_stack.patches import page_cost

    app = Application(FunctionHandler(lambda doc: doc.add_root(figure(title="no renderers"))))
    monkeypatch.delenv(topology.VALIDATE_DOCUMENTS, raising=False)
    fixes.apply(page_cost.FIXES)
    with caplog.at_level(logging.WARNING, logger="bokeh.core.validation.check"):
        app.create_document()
        assert "MISSING_RENDERERS" not in caplog.text
        monkeypatch.setenv(topology.VALIDATE_DOCUMENTS, "true")
        app.create_document()
        assert "W-1000 (MISSING_RENDERERS)" in caplog.text
