"""Bring a stack up: in the foreground (Ctrl-C, SIGTERM or a closed terminal stops it), detached (returns once
it serves), or watching the apps' code (`--dev`: a saved file restarts the workers that serve it)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from bokeh_stack.config import topology
from bokeh_stack.config.plan import RunPlan
from bokeh_stack.config.settings import Settings, write_record
from bokeh_stack.provisioning import apply as applying
from bokeh_stack.provisioning import privileges, supervision
from bokeh_stack.provisioning import render as rendering
from bokeh_stack.provisioning.app_check import check_apps

READY_TIMEOUT_S = 90
WATCH_INTERVAL_S = 1.0
# Lines of a broken app's traceback shown when the stack starts or applies (the rest is in the worker log).
TRACEBACK_LINES = 6


class StackError(RuntimeError):
    """A problem to report in one clear message, exit status 1."""


def say(message: str) -> None:
    print(f"bokeh-stack: {message}", flush=True)


class StopSignal:
    """SIGINT (Ctrl-C), SIGTERM and SIGHUP (the terminal closed) set a flag; the main loop stops the stack."""

    def __init__(self) -> None:
        self.requested = False
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True


def up(plan: RunPlan, detach: bool = False, dev: bool = False, verbose: bool = False) -> int:
    settings = plan.settings
    if dev and detach:
        raise StackError("--dev watches the apps' code in the foreground: leave out --detach")
    running = supervision.supervisord_running(plan.socket)
    if running:
        raise StackError(f"a stack already runs from {plan.run_dir} (supervisord pid {running}): stop it first")
    check_ports_free(plan)
    privileges.check(plan, say)
    rendering.render_checked(plan)
    write_record(settings)
    broken = BrokenApps(plan)  # runs each app once, while the workers start
    stop = StopSignal()
    say(f"starting {sum(pool.workers for pool in settings.pools)} workers and nginx (logs: {settings.log_dir})")
    if detach:
        return _up_detached(plan, broken, stop)
    proc = supervision.start_supervisord(plan, silent=not verbose, validate_documents=dev)
    try:
        if not wait_ready(plan, lambda: proc.poll() is None, stop):
            return 1 if proc.poll() is not None or not stop.requested else 0
        broken.report()
        say_ready(plan, "Ctrl-C stops")
        if dev:
            say("watching the apps' code: a saved change restarts the workers that serve it")
        last_look = time.monotonic()
        while not stop.requested and proc.poll() is None:
            time.sleep(0.2)
            if dev and time.monotonic() - last_look > WATCH_INTERVAL_S:
                _deploy_changes(plan)
                last_look = time.monotonic()
        if proc.returncode:
            print(f"bokeh-stack: supervisord exited with status {proc.returncode}", file=sys.stderr)
            return 1
        return 0  # Ctrl-C, SIGTERM, SIGHUP, or `bokeh-stack stop` from elsewhere (supervisord exits 0)
    finally:
        _stop_child(proc)


def _up_detached(plan: RunPlan, broken: BrokenApps, stop: StopSignal) -> int:
    supervision.start_supervisord(plan, foreground=False).wait()  # returns once supervisord is in the background
    started = time.monotonic()

    def alive() -> bool:  # a supervisord going to the background takes a moment to open its socket
        return supervision.supervisord_running(plan.socket) is not None or time.monotonic() - started < 10

    if not wait_ready(plan, alive, stop):
        supervision.shutdown(plan)
        return 1
    broken.report()
    say_ready(plan, "it runs in the background")
    say(f"stop it with: bokeh-stack stop --runtime-dir {plan.run_dir}")
    return 0


def _deploy_changes(plan: RunPlan) -> None:
    """--dev: when a rendered file would change (an app's code digest is in its pool's worker arguments), apply."""
    if not rendering.pending(plan):
        return
    try:
        applying.apply(plan, log=say)
    except (applying.ApplyError, rendering.RenderError, privileges.PrivilegeError) as e:
        say(f"could not apply the change: {e}")
    BrokenApps(plan).report()


def _stop_child(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        say("stopping")
        proc.send_signal(signal.SIGTERM)  # supervisord stops every worker (draining) and nginx, then exits
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    say("stopped")


def public_url(settings: Settings) -> str:
    scheme = "https" if settings.tls_on else "http"
    return f"{scheme}://{settings.server_names[0]}:{settings.public_port}{settings.prefix}/"


def say_ready(plan: RunPlan, how: str) -> None:
    settings = plan.settings
    say(f"ready at {public_url(settings)}  ({', '.join(settings.apps)}); {how}")
    if plan.with_nginx:
        say(f"operators: {ops_url(settings)} (the live dashboard; Prometheus scrapes /metrics there)")
    if plan.with_signin and settings.auth.mode == "password" and not settings.users_file.exists():
        say("sign-in is on and nobody can sign in yet: add users with  bokeh-stack users add NAME --password-stdin")


def ops_url(settings: Settings) -> str:
    return topology.ops_endpoint(settings).url + topology.route("ops")


def check_ports_free(plan: RunPlan) -> None:
    settings = plan.settings
    wanted = [(settings.listen_address, settings.port, "nginx")]
    if settings.tls_on:
        wanted.append((settings.listen_address, settings.tls.port, "nginx (TLS)"))
    if plan.with_nginx:
        wanted.append((settings.ops.address, settings.ops.port, "nginx (ops listener)"))
    if plan.with_workers and not settings.worker_sockets:
        wanted += [(settings.worker_address, port, "a worker") for port in settings.worker_ports]
    for address, port, user in wanted:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((address, port))
            except OSError as e:
                raise StackError(f"port {port} on {address}, wanted by {user}, is not free: {e.strerror}") from e


def wait_ready(plan: RunPlan, alive: Callable[[], bool], stop: StopSignal) -> bool:
    """Poll until every worker answers its probe and nginx's /healthz says 200, showing progress."""
    s = plan.settings
    deadline = time.monotonic() + READY_TIMEOUT_S
    total, shown = sum(pool.workers for pool in s.pools), set()
    while time.monotonic() < deadline and not stop.requested:
        if not alive():
            print(f"bokeh-stack: supervisord exited; see {plan.process_log('supervisord')}", file=sys.stderr)
            return False
        try:
            workers = supervision.workers(plan)
        except OSError:
            workers = []  # supervisord is still starting
        fatal = [w for w in workers if w.state in ("FATAL", "BACKOFF")]
        if fatal:
            w = fatal[0]
            tail = supervision.log_tail(plan, w.name)
            raise StackError(f"worker {w.name} cannot start ({w.state}); the end of its log:\n{tail}")
        answering = [w for w in workers if w.probe_ok]
        for w in answering:
            if w.name not in shown:
                shown.add(w.name)
                where = "its unix socket" if s.worker_sockets else f"port {w.port}"
                say(f"worker {w.name} serves (pid {w.pid}, {where}): {len(shown)}/{total}")
        ready = len(answering)
        if ready == total and topology.healthz(s, timeout=2) == 200:
            return True
        time.sleep(0.25)
    if not stop.requested:
        raise StackError(f"the stack was not ready within {READY_TIMEOUT_S} s; see the logs in {s.log_dir}")
    return False


class BrokenApps:
    """Every app run once (as a worker does for a new session), in the background: which ones raise."""

    def __init__(self, plan: RunPlan) -> None:
        self.plan = plan
        self.failures: dict[str, str] = {}
        self._thread = threading.Thread(target=self._check, daemon=True)
        self._thread.start()

    def _check(self) -> None:
        settings = self.plan.settings
        results = check_apps(settings, self.plan.app_user)
        self.failures = {app: error for app, error in results.items() if error}

    def report(self) -> dict[str, str]:
        """Print each broken app's error and the end of its traceback; returns app -> error."""
        self._thread.join()
        for app, error in self.failures.items():
            pool = self.plan.settings.pool_of(app)
            log = self.plan.process_log(topology.worker_process(pool.program, "<port>"))
            print(f"bokeh-stack: app {app} is BROKEN: its page answers 500 (the other apps serve)", file=sys.stderr)
            print(describe(error, f"the rest is in {log} (settings.log_dir)"), file=sys.stderr, flush=True)
        return self.failures


def describe(error: str, more: str) -> str:
    """An app's error: the exception and the last lines of its traceback, indented, then where the rest is."""
    lines = error.strip().splitlines()
    shown = lines if len(lines) <= TRACEBACK_LINES + 1 else [lines[0], "...", *lines[-TRACEBACK_LINES:]]
    return "\n".join(f"    {line}" for line in [*shown, f"({more})"])
