"""Helpers for tests that start a real stack: free loopback ports, `bokeh-stack up` as a child process,
page views, the counter app's records."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from tornado.httpclient import AsyncHTTPClient, HTTPRequest, HTTPResponse

from bokeh_stack.config.plan import RunPlan
from bokeh_stack.config.settings import load
from bokeh_stack.provisioning import supervision

from .pageview import CookieJar, PageView, page_view

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_APPS = ROOT / "apps"
TEST_APPS = ROOT / "tests" / "apps"


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll until predicate() is truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def port_free(port: int, address: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except OSError:
            return False
    return True


def ephemeral_ports_start() -> int:
    """Where the kernel's ephemeral ports begin: ports for servers are taken below it (a client connecting to a
    port of that range that nobody listens on yet can connect to itself)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_ports(count: int) -> int:
    """The first of `count` consecutive free loopback ports, below the ephemeral range."""
    for _ in range(200):
        start = random.randrange(10000, max(ephemeral_ports_start() - count, 10001))
        if all(port_free(p) for p in range(start, start + count)):
            return start
    raise RuntimeError("no block of free ports")


class Execution(NamedTuple):
    """One run of the counter app's code: one session built."""

    port: int
    session_id: str
    app: str
    host: str

    @property
    def worker(self) -> str:
        return f"{self.host}:{self.port}"


def writable_record(record: Path) -> Path:
    """The counter apps' record file, made first and open to every user: started as root, the workers run as the
    service user (bokeh-stack), who cannot create files in a test's directory."""
    record.touch()
    record.chmod(0o666)
    return record


def read_executions(record: Path) -> list[Execution]:
    if not record.exists():
        return []
    return [Execution(int(p), s, a, h) for p, s, a, h in (line.split() for line in record.read_text().splitlines())]


def build_wheel() -> Path:
    """`make wheel`: the bokeh-stack wheel in dist/, the one the Salt formula installs."""
    result = subprocess.run(["make", "-s", "-C", str(ROOT), "wheel"], capture_output=True, text=True)
    assert result.returncode == 0, f"make wheel failed:\n{result.stdout}{result.stderr}"
    [wheel] = (ROOT / "dist").glob("bokeh_stack-*.whl")
    return wheel


def counter_apps(directory: Path, names: list[str]) -> Path:
    """An apps dir holding the counter app under each of `names`."""
    for name in names:
        shutil.copytree(TEST_APPS / "counter", directory / name)
    return directory


@dataclass
class RunningStack:
    settings_file: Path
    proc: subprocess.Popen
    output: Path
    record: Path
    settings: Any = field(init=False)

    def __post_init__(self) -> None:
        self.settings = load(self.settings_file)

    @property
    def plan(self) -> RunPlan:
        return RunPlan(self.settings)

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.settings.port}{self.settings.prefix}{path}"

    def ops_url(self, path: str = "/metrics") -> str:
        return f"http://127.0.0.1:{self.settings.ops.port}{path}"

    def rpc(self):
        return supervision.rpc(self.plan.socket).supervisor

    def executions(self) -> list[Execution]:
        return read_executions(self.record)

    def workers(self) -> list[supervision.Worker]:
        return supervision.workers(self.plan)

    def log(self) -> str:
        return self.output.read_text(errors="replace")

    def log_tails(self, lines: int = 15) -> str:
        """The last lines of each of the stack's log files, for a failure's report."""
        tails, log_dir = [], self.plan.log_dir
        for path in sorted(log_dir.glob("*.log")) if log_dir.is_dir() else ():
            last = path.read_text(errors="replace").splitlines()[-lines:]
            tails.append(f"--- {path.name} (last {len(last)} lines)\n" + "\n".join(last))
        return "\n".join(tails)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # Whatever happened above, nothing of this stack may outlive the test.
        pid_file = self.settings.runtime_dir / "supervisord.pid"
        if pid_file.exists():
            try:
                os.killpg(int(pid_file.read_text()), signal.SIGKILL)
            except (ProcessLookupError, ValueError, PermissionError):
                pass
        return self.proc.returncode


def worker_places(settings: dict[str, Any]) -> int:
    """Ports the stack's workers may take (at least): each pool's most workers, and one more where it recycles."""

    def places(spec: dict[str, Any], workers: int) -> int:
        most = max(spec.get("workers", workers), spec.get("max_workers") or 0)
        return most + (1 if spec.get("recycle") or settings.get("recycle") else 0)

    return places(settings, 2) + sum(places(spec, 1) for spec in settings.get("pools", {}).values())


def start_stack(
    tmp_path: Path,
    apps_dir: Path,
    ready: bool = True,
    up_args: tuple[str, ...] = (),
    checkout: Path | None = None,
    **settings: Any,
) -> RunningStack:
    """`bokeh-stack up [up_args]` on free loopback ports, waited on until it says it is ready. `checkout`: the
    checkout whose bokeh_stack package runs it (the bench's previous version), instead of the installed one."""
    first = free_ports(worker_places(settings) + 2)
    values = {
        "apps_dir": str(apps_dir),
        "runtime_dir": str(tmp_path / "run"),
        "listen_address": "127.0.0.1",
        "port": first,
        "base_port": first + 2,
    }
    values.update(settings)
    values["ops"] = {"port": first + 1, **settings.get("ops", {})}
    # Tests drive many page views and websockets from one address (a real crowd comes from many): no per-address
    # page or websocket limit unless a test sets one.
    values["nginx"] = {"page_rate_per_s": 0, "ws_per_address": 0, "ws_open_rate_per_s": 0, **settings.get("nginx", {})}
    settings_file = tmp_path / "bokeh-stack.yaml"
    settings_file.write_text(yaml.safe_dump(values))
    output, record = tmp_path / "up.log", tmp_path / "executions.txt"
    env = {**os.environ, "COUNTER_RECORD_FILE": str(writable_record(record))}
    env.pop("BOKEH_SECRET_KEY", None)
    if checkout is not None:  # supervisord hands it on to the workers
        env["PYTHONPATH"] = str(checkout)
    with open(output, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bokeh_stack", "up", "--settings", str(settings_file), *up_args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            # `-m` puts the working directory first on the import path: the checkout's `up` renders with its own
            # templates for its own workers.
            cwd=checkout,
            start_new_session=True,
        )
    stack = RunningStack(settings_file, proc, output, record)
    if ready:
        try:
            wait_for(lambda: "ready at" in stack.log() or proc.poll() is not None, 90, "the stack to be ready")
            assert proc.poll() is None, f"bokeh-stack up exited with {proc.returncode}:\n{stack.log()}"
        except BaseException:
            stack.stop()
            raise
    return stack


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def fetch(url: str, jar: CookieJar | None = None, **kwargs: Any) -> HTTPResponse:
    """One HTTP request as it is answered (redirects not followed, HTTP errors as responses; OSError if nothing
    listens), with the jar's cookies if given; kwargs as tornado's HTTPRequest takes them (method, body, headers)."""
    headers = {**kwargs.pop("headers", {}), **({"Cookie": jar.header()} if jar and jar.cookies else {})}
    request = HTTPRequest(url, headers=headers, follow_redirects=False, **kwargs)

    async def get() -> HTTPResponse:
        return await AsyncHTTPClient().fetch(request, raise_error=False)

    return run(get())


async def page_views(urls: list[str], concurrency: int = 1, **kwargs: Any) -> list[PageView]:
    """First-visit page views (each with a new cookie jar), `concurrency` at a time."""
    limit = asyncio.Semaphore(concurrency)

    async def one(url: str) -> PageView:
        async with limit:
            return await page_view(url, **kwargs)

    return await asyncio.gather(*(one(url) for url in urls))


@dataclass
class Stream:
    """What a stream of page views saw."""

    done: int = 0
    failures: list[str] = field(default_factory=list)
    reconnects: int = 0  # page views whose websocket had to be opened again, as BokehJS does

    def __str__(self) -> str:
        return f"{self.done} page views, {len(self.failures)} failed, {self.reconnects} reconnected"


async def stream_of_page_views(
    url: str,
    seconds: float,
    concurrency: int = 4,
    stop: asyncio.Event | None = None,
    pause: float = 0.0,
    **kwargs: Any,
) -> Stream:
    """First-visit page views, `concurrency` at a time (each round `pause` s after the last), for `seconds` or until
    `stop` is set."""
    stream = Stream()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not (stop and stop.is_set()):
        await asyncio.sleep(pause)
        results = await asyncio.gather(*(page_view(url, **kwargs) for _ in range(concurrency)), return_exceptions=True)
        stream.failures += [repr(r) for r in results if isinstance(r, BaseException)]
        stream.reconnects += sum(r.reconnects for r in results if not isinstance(r, BaseException))
        stream.done += len(results)
    return stream


async def during_page_views(url: str, seconds: float, action: Callable[[], Any], after: float = 1.0, **kwargs: Any):
    """Run `action` `after` seconds into a stream of page views; returns the Stream and action's result."""
    load = asyncio.create_task(stream_of_page_views(url, seconds, **kwargs))
    await asyncio.sleep(after)
    result = action()
    return await load, result


def executions_per_view(executions: list[Execution], views: list[PageView]) -> tuple[float, Counter]:
    """Executions of the counter app per page view, and how many sessions each worker (host:port) built."""
    ids = {v.session_id for v in views}
    mine = [e for e in executions if e.session_id in ids]
    return len(mine) / len(views), Counter(e.worker for e in mine)
