"""The deployments a user would choose between, each started on loopback ports and stopped by process group:
one `bokeh serve`, `bokeh serve --num-procs N`, Bokeh's documented nginx recipe over N `bokeh serve` workers,
bokeh-stack as it was (a git worktree of an earlier commit), and bokeh-stack. All serve the same apps with the same
session settings (bokeh-stack's defaults)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import psutil

from bokeh_stack.config import topology
from bokeh_stack.config.plan import find_nginx
from bokeh_stack.config.settings import load
from bokeh_stack.provisioning.render import bokeh_static_dir
from harness.stack import free_ports, start_stack, wait_for

HERE = Path(__file__).resolve().parent
SETUPS = {
    "single": "one bokeh serve",
    "num_procs": "bokeh serve --num-procs",
    "recipe": "nginx recipe (least_conn)",
    "previous": "bokeh-stack before",
    "stack": "bokeh-stack",
}
# The commit the "previous" setup runs: the last one before the work on page cost and streaming (issue 28).
PREVIOUS = "6a25d5b"
DEFAULTS = load(None)


@dataclass
class Setup:
    """A running deployment: its public address, its workers' addresses and processes."""

    key: str
    port: int
    worker_ports: list[int]
    record: Path  # the counter app's executions
    _pids: Callable[[], list[int]] = field(repr=False)
    ops_port: int | None = None  # bokeh-stack's ops listener

    @property
    def label(self) -> str:
        return SETUPS[self.key]

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"{self.origin}{path}"

    def worker_url(self, path: str, index: int = 0) -> str:
        return f"http://127.0.0.1:{self.worker_ports[index]}{path}"

    def worker_pids(self) -> list[int]:
        return self._pids()


class Processes:
    """Child processes, each in its own process group, all stopped (SIGTERM, then SIGKILL) on exit."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.procs: list[subprocess.Popen] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        with open(self.directory / f"{name}.log", "wb") as log:
            proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, start_new_session=True
            )
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self.procs:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                pass
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()

    def check_alive(self) -> None:
        for proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{' '.join(proc.args[:4])} exited with {proc.returncode}: see {self.directory}")


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _answers(port: int, path: str = "/") -> bool:
    return topology.Endpoint("127.0.0.1", port).get_status(path, timeout=2) == 200


def bokeh_serve(apps: list[Path], port: int, public_port: int, session: dict, extra: list[str] = ()) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bokeh",
        "serve",
        *map(str, apps),
        "--address",
        "127.0.0.1",
        "--port",
        str(port),
        "--allow-websocket-origin",
        f"127.0.0.1:{public_port}",
        "--unused-session-lifetime",
        str(session["unused_lifetime_ms"]),
        "--check-unused-sessions",
        str(session["check_unused_ms"]),
        *extra,
    ]


def apps_dir(directory: Path, apps: dict[str, Path]) -> Path:
    for name, source in apps.items():
        shutil.copytree(source, directory / name, ignore=shutil.ignore_patterns("__pycache__"))
    return directory


def _app_dirs(apps_dir: Path) -> list[Path]:
    return sorted(p for p in apps_dir.iterdir() if (p / "main.py").exists())


def has_commit(ref: str) -> bool:
    found = subprocess.run(["git", "-C", str(HERE.parent), "cat-file", "-e", f"{ref}^{{commit}}"], capture_output=True)
    return found.returncode == 0


@contextmanager
def previous_checkout(directory: Path, ref: str = PREVIOUS) -> Iterator[Path]:
    """A git worktree of bokeh-stack at `ref`, removed on exit."""
    root = HERE.parent
    subprocess.run(["git", "-C", str(root), "worktree", "add", "--detach", str(directory), ref], check=True)
    try:
        yield directory
    finally:
        subprocess.run(["git", "-C", str(root), "worktree", "remove", "--force", str(directory)], check=False)


@contextmanager
def started(
    key: str,
    apps_dir: Path,
    workers: int,
    directory: Path,
    session: dict | None = None,
    settings: dict | None = None,
    checkout: Path | None = None,
) -> Iterator[Setup]:
    """Start the deployment `key` serving every app in apps_dir, with `session` settings (unused_lifetime_ms,
    check_unused_ms; default bokeh-stack's) and, for bokeh-stack, any other `settings`; stop all of it on exit.
    `checkout`: for "previous", the worktree whose bokeh-stack runs."""
    given = session or {}
    session = {**DEFAULTS.session.model_dump(), **given}
    directory.mkdir(parents=True, exist_ok=True)
    record = directory / "executions.txt"
    env = {"COUNTER_RECORD_FILE": str(record)}
    apps = _app_dirs(apps_dir)
    if key in ("stack", "previous"):
        # The bench also measures the workers directly, without nginx: on TCP ports, not unix sockets. Only the
        # session settings given (the rest are the stack's own defaults, which an earlier version may not know).
        settings = {"unix_sockets": False, **(settings or {})}
        previous = checkout if key == "previous" else None
        stack = start_stack(directory, apps_dir, workers=workers, session=given, checkout=previous, **settings)
        try:
            ports = stack.settings.worker_ports
            pids = lambda: [w.pid for w in sorted(stack.workers(), key=lambda w: w.port)]  # noqa: E731
            yield Setup(key, stack.settings.port, ports, stack.record, pids, stack.settings.ops.port)
        finally:
            stack.stop()
        return

    processes = Processes(directory)
    try:
        if key == "single":
            port = free_ports(1)
            proc = processes.start("bokeh", bokeh_serve(apps, port, port, session), env)
            setup = Setup(key, port, [port], record, lambda: [proc.pid])
        elif key == "num_procs":
            port = free_ports(1)
            argv = bokeh_serve(apps, port, port, session, ["--num-procs", str(workers)])
            proc = processes.start("bokeh", argv, env)
            setup = Setup(key, port, [port], record, lambda: [c.pid for c in psutil.Process(proc.pid).children()])
            wait_for(lambda: len(setup.worker_pids()) == workers, 60, f"{workers} bokeh serve children")
        elif key == "recipe":
            port = free_ports(workers + 1)
            ports = list(range(port + 1, port + 1 + workers))
            procs = [processes.start(f"worker-{p}", bokeh_serve(apps, p, port, session), env) for p in ports]
            for p in ports:
                wait_for(lambda p=p: _answers(p) or processes.check_alive(), 60, f"bokeh serve on port {p}")
            conf = directory / "nginx.conf"
            conf.write_text(recipe_conf(directory, port, ports))
            processes.start("nginx", [find_nginx() or "nginx", "-p", str(directory), "-c", str(conf)])
            setup = Setup(key, port, ports, record, lambda: [p.pid for p in procs])
        else:
            raise ValueError(f"unknown setup {key!r}: one of {', '.join(SETUPS)}")
        wait_for(lambda: _answers(setup.port) or processes.check_alive(), 60, f"{setup.label} to answer")
        yield setup
    finally:
        processes.stop()


def recipe_conf(directory: Path, port: int, worker_ports: list[int]) -> str:
    template = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE), undefined=jinja2.StrictUndefined)
    return template.get_template("nginx-recipe.conf.j2").render(
        run_dir=directory, port=port, worker_ports=worker_ports, static_dir=bokeh_static_dir()
    )
