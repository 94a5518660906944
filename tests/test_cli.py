"""The bokeh-stack command as a user runs it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from bokeh_stack.config import topology
from harness.pageview import page_view
from harness.stack import SHIPPED_APPS, counter_apps, free_ports, run, wait_for, writable_record


def bokeh_stack(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bokeh_stack", *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def test_a_bad_setting_stops_up_before_anything_starts(tmp_path):
    result = bokeh_stack("up", "--apps", str(SHIPPED_APPS), "--workers", "0", "--runtime-dir", str(tmp_path / "run"))
    assert result.returncode == 2
    assert "workers must be at least 1, got 0" in result.stderr
    assert not (tmp_path / "run").exists(), "nothing may be written or started"


def test_an_apps_dir_without_apps(tmp_path):
    result = bokeh_stack("up", "--apps", str(tmp_path), "--runtime-dir", str(tmp_path / "run"))
    assert result.returncode == 2
    assert f"apps_dir {tmp_path} holds no Bokeh app" in result.stderr


def test_render_writes_configs_nginx_accepts(tmp_path):
    result = bokeh_stack("render", "--apps", str(SHIPPED_APPS), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert "nginx -t: ok" in result.stdout
    assert (tmp_path / "out" / "nginx" / "bokeh-stack.conf").is_file()
    assert (tmp_path / "out" / "supervisord.conf").is_file()
    assert not (tmp_path / "out" / "secret").exists(), "render does not need the secret"


def test_the_redis_password_comes_from_the_secret(tmp_path):
    run_dir = tmp_path / "run"
    printed = bokeh_stack("secret", "--redis-password", "--apps", str(SHIPPED_APPS), "--runtime-dir", str(run_dir))
    assert printed.returncode == 0, printed.stderr
    password = printed.stdout.strip()
    assert len(password) == 64 and (run_dir / "secret").stat().st_mode & 0o777 == 0o600, "made with the secret"
    assert (run_dir / "secret").read_text().strip() not in printed.stdout
    again = bokeh_stack("secret", "--redis-password", "--apps", str(SHIPPED_APPS), "--runtime-dir", str(run_dir))
    assert again.stdout.strip() == password, "the same for every worker and provisioner that holds the secret"


def test_check_names_the_app_that_fails(tmp_path):
    apps = counter_apps(tmp_path / "apps", ["good"])
    (apps / "broken").mkdir()
    (apps / "broken" / "main.py").write_text("import numpy\nraise RuntimeError('the instrument is offline')\n")
    (apps / "empty_plot").mkdir()  # builds, but Bokeh's checks (which the workers leave out) find a plot to draw
    (apps / "empty_plot" / "main.py").write_text(
        "from bokeh.plotting import curdoc, figure\ncurdoc().add_root(figure(title='nothing yet'))\n"
    )
    result = bokeh_stack("check", "--apps", str(apps), "--runtime-dir", str(tmp_path / "run"))
    assert result.returncode == 1
    assert "app good: ok\n" in result.stdout
    assert "app broken: FAILED" in result.stdout and "the instrument is offline" in result.stdout
    assert "app empty_plot: ok, Bokeh's checks of its document found 1:\n" in result.stdout
    assert "    warning 1000 (MISSING_RENDERERS): Plot has no renderers" in result.stdout
    assert "configs: ok" in result.stdout
    assert "1 app(s) failed to build their document" in result.stderr


def test_check_passes_for_the_shipped_apps(tmp_path):
    result = bokeh_stack("check", "--apps", str(SHIPPED_APPS), "--runtime-dir", str(tmp_path / "run"))
    assert result.returncode == 0, result.stdout + result.stderr
    apps = sorted(p.name for p in SHIPPED_APPS.iterdir() if (p / "main.py").is_file())
    assert [line for line in result.stdout.splitlines() if line.startswith("app ")] == [f"app {a}: ok" for a in apps]
    assert "settings: ok" in result.stdout and "configs: ok" in result.stdout


@pytest.mark.stack
def test_up_refuses_a_port_in_use(tmp_path):
    port = free_ports(4)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port + 3))
        taken.listen()
        result = bokeh_stack(
            "up", "--apps", str(SHIPPED_APPS), "--port", str(port), "--base-port", str(port + 1),
            "--ops-port", str(port + 3), "--runtime-dir", str(tmp_path / "run"),
        )  # fmt: skip
    assert result.returncode == 1
    assert f"port {port + 3} on 127.0.0.1, wanted by nginx (ops listener), is not free" in result.stderr
    assert not (tmp_path / "run" / "supervisord.pid").exists(), "nothing started"


@pytest.mark.stack
def test_status_then_sigterm_stops_everything(stacks, tmp_path):
    stack = stacks(counter_apps(tmp_path / "apps", ["counter"]), workers=2)
    result = bokeh_stack("status", "--settings", str(stack.settings_file))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1].split()[:6] == ["WORKER", "POOL", "STATE", "PID", "PORT", "UPTIME"]
    workers = [line.split() for line in lines[2:4]]
    # RUNNING as soon as it answers, though supervisord says STARTING until startsecs (30 s) have passed.
    assert [(w[0], w[2], w[4]) for w in workers] == [
        (f"bokeh_default_{p}", "RUNNING", str(p)) for p in stack.settings.worker_ports
    ]
    assert lines[4].split()[:3] == ["TOTAL", "2/2", "up"]
    secret = stack.settings.secret_file
    assert secret.stat().st_mode & 0o777 == 0o600

    supervisord = psutil.Process(stack.rpc().getPID())
    processes = [supervisord] + supervisord.children(recursive=True)
    assert len(processes) >= 4  # supervisord, 2 workers, nginx (and its workers)
    assert stack.stop() == 0
    assert "bokeh-stack: stopped" in stack.log()
    wait_for(
        lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in processes),
        10,
        "every process to end",
    )
    result = bokeh_stack("status", "--settings", str(stack.settings_file))
    assert result.returncode == 1 and "no stack is running" in result.stderr


def test_the_console_script_and_python_m_render_the_same_configs(tmp_path):
    """Salt runs `bokeh-stack`, a user `python -m bokeh_stack`: a reload must not restart every worker for it."""
    out = tmp_path / "out"
    script = Path(sys.executable).with_name("bokeh-stack")
    first = subprocess.run([str(script), "render", "--apps", str(SHIPPED_APPS), "--out", str(out)], capture_output=True)
    assert first.returncode == 0, first.stderr
    again = bokeh_stack("render", "--apps", str(SHIPPED_APPS), "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("0 file(s) changed"), again.stdout


class Detached:
    """A stack started with `bokeh-stack up --detach`, flags only, in the user's default state directory."""

    def __init__(self, tmp_path: Path, apps: Path, *flags: str) -> None:
        self.port = free_ports(8)
        self.ops_port = self.port + 7  # beyond the workers a test may add
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("BOKEH_")}
        record = writable_record(tmp_path / "executions.txt")
        self.env.update(XDG_STATE_HOME=str(tmp_path / "state"), COUNTER_RECORD_FILE=str(record))
        self.run_dir = tmp_path / "state" / "bokeh-stack"
        self.up = self.cli("up", "--detach", "--apps", str(apps), "--port", str(self.port),
                           "--base-port", str(self.port + 1), "--ops-port", str(self.ops_port), *flags,
                           cwd=tmp_path)  # fmt: skip

    def cli(self, *args: str, cwd=None, timeout: float = 180) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "bokeh_stack", *args], capture_output=True, text=True,
                              timeout=timeout, env=self.env, cwd=cwd)  # fmt: skip

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def kill(self) -> None:
        pid_file = self.run_dir / "supervisord.pid"
        if pid_file.exists() and self.cli("stop", timeout=90).returncode != 0:
            try:
                os.killpg(int(pid_file.read_text()), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass


@pytest.fixture
def detached(tmp_path):
    started: list[Detached] = []

    def start(apps: Path, *flags: str) -> Detached:
        started.append(Detached(tmp_path, apps, *flags))
        return started[-1]

    yield start
    for stack in started:
        stack.kill()


@pytest.mark.stack
def test_every_command_acts_on_the_stack_as_up_started_it(detached, tmp_path):
    stack = detached(counter_apps(tmp_path / "apps", ["counter"]), "--workers", "2")
    assert stack.up.returncode == 0, stack.up.stdout + stack.up.stderr
    assert f"ready at http://localhost:{stack.port}/" in stack.up.stdout and "runs in the background" in stack.up.stdout
    assert run(page_view(stack.url("/counter"))).document.roots

    # No flag, no settings file: every command finds the stack in the default place, with up's ports.
    status = stack.cli("status")
    assert status.returncode == 0, status.stderr
    assert [line.split()[4] for line in status.stdout.splitlines()[2:4]] == [str(stack.port + 1), str(stack.port + 2)]
    applied = stack.cli("apply")
    assert applied.returncode == 0 and "nothing changed" in applied.stdout, applied.stdout + applied.stderr
    dry = stack.cli("apply", "--dry-run", "--workers", "3")
    assert dry.returncode == 0 and "+numprocs=3" in dry.stdout and "-numprocs=2" in dry.stdout, dry.stdout
    assert stack.cli("status").stdout.count("bokeh_default_") == 2, "a dry run changes nothing"
    logs = stack.cli("logs", "nginx", "-n", "3")
    assert logs.returncode == 0 and "nginx-access | " in logs.stdout, logs.stdout + logs.stderr
    assert "GET /counter " in logs.stdout
    worker_log = stack.cli("logs", str(stack.port + 1))
    assert worker_log.stdout.startswith(f"bokeh_default_{stack.port + 1} | "), worker_log.stdout
    assert "no log of 'nosuch'" in stack.cli("logs", "nosuch").stderr
    # One log per process that writes one: no supervisord AUTO files, no empty nginx stdout log.
    workers = [f"bokeh_default_{stack.port + i}.log" for i in (1, 2)]
    expected = {"supervisord.log", "nginx-error.log", "nginx-access.log", "bokeh_stack_ops.log", *workers}
    expected.add("bokeh_stack_watchdog.log")
    expected.add("bokeh_stack_restarts.log")
    assert {p.name for p in (stack.run_dir / "logs").iterdir()} == expected

    supervisord = psutil.Process(int((stack.run_dir / "supervisord.pid").read_text()))
    processes = [supervisord] + supervisord.children(recursive=True)
    stopped = stack.cli("stop")
    assert stopped.returncode == 0 and "stopped the stack" in stopped.stdout
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in processes)
    assert stack.cli("status", "--quiet").returncode == 3
    assert list((tmp_path / "apps").parent.glob("*.yaml")) == [], "up wrote nothing where it was run"


@pytest.mark.stack
def test_apply_deploys_changed_app_code_one_worker_at_a_time(detached, tmp_path):
    apps = counter_apps(tmp_path / "apps", ["counter", "other"])
    stack = detached(apps)
    assert stack.up.returncode == 0, stack.up.stderr
    main = apps / "counter" / "main.py"
    main.write_text(main.read_text().replace('doc.title = "Counter"', 'doc.title = "Counter, version 2"'))
    applied = stack.cli("apply")
    assert applied.returncode == 0, applied.stderr
    first, second = (
        f"restarted bokeh_default_{p} (app code changed: counter)" for p in (stack.port + 1, stack.port + 2)
    )
    assert first in applied.stdout and second in applied.stdout, applied.stdout
    assert applied.stdout.index(first) < applied.stdout.index(second)
    assert run(page_view(stack.url("/counter"))).document.title == "Counter, version 2"
    assert "nothing changed" in stack.cli("apply").stdout

    # As after an upgrade: the workers run the code of an older bokeh-stack than the one installed now.
    args = stack.run_dir / "workers" / "bokeh_default.args"
    lines = args.read_text().splitlines(keepends=True)
    assert lines[0].startswith("# bokeh-stack ")
    args.write_text("# bokeh-stack 0.0.1 0000000000000000 bokeh 3.0.0\n" + "".join(lines[1:]))
    upgraded = stack.cli("apply")
    assert upgraded.returncode == 0, upgraded.stderr
    first, second = (
        f"restarted bokeh_default_{p} (bokeh-stack or Bokeh changed)" for p in (stack.port + 1, stack.port + 2)
    )
    assert first in upgraded.stdout and second in upgraded.stdout, upgraded.stdout
    assert upgraded.stdout.index(first) < upgraded.stdout.index(second)


@pytest.mark.stack
def test_a_broken_app_is_loud_and_the_others_serve(detached, tmp_path):
    apps = counter_apps(tmp_path / "apps", ["counter"])
    (apps / "broken").mkdir()
    (apps / "broken" / "main.py").write_text(
        "def read():\n    raise RuntimeError('the instrument is offline')\n\nread()\n"
    )
    stack = detached(apps)
    assert stack.up.returncode == 0, stack.up.stderr
    assert "app broken is BROKEN" in stack.up.stderr and "RuntimeError: the instrument is offline" in stack.up.stderr
    assert "in read" in stack.up.stderr, "the end of the traceback is shown"
    assert "bokeh_default_<port>.log" in stack.up.stderr
    applied = stack.cli("apply")
    assert applied.returncode == 1 and "1 app(s) failed to build their document: broken" in applied.stderr
    assert run(page_view(stack.url("/counter"))).document.roots


@pytest.mark.stack
def test_closing_the_terminal_stops_a_foreground_stack(stacks, tmp_path):
    stack = stacks(counter_apps(tmp_path / "apps", ["counter"]), workers=1)
    supervisord = psutil.Process(stack.rpc().getPID())
    processes = [supervisord] + supervisord.children(recursive=True)
    stack.proc.send_signal(signal.SIGHUP)
    assert stack.proc.wait(timeout=60) == 0
    assert "bokeh-stack: stopped" in stack.log()
    wait_for(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in processes), 10,
             "every process to end")  # fmt: skip


@pytest.mark.stack
def test_stop_from_another_terminal_ends_a_foreground_up_cleanly(stacks, tmp_path):
    stack = stacks(counter_apps(tmp_path / "apps", ["counter"]), workers=1)
    stopped = bokeh_stack("stop", "--settings", str(stack.settings_file))
    assert stopped.returncode == 0 and "stopped the stack" in stopped.stdout
    assert stack.proc.wait(timeout=60) == 0, stack.log()


@pytest.mark.stack
def test_dev_mode_restarts_the_workers_when_an_app_is_saved(stacks, tmp_path):
    apps = counter_apps(tmp_path / "apps", ["counter"])
    stack = stacks(apps, workers=1, up_args=("--dev",))
    main = apps / "counter" / "main.py"
    main.write_text(main.read_text().replace('doc.title = "Counter"', 'doc.title = "Counter, saved"'))
    wait_for(lambda: "(app code changed: counter)" in stack.log(), 60, "the dev mode to restart the worker")
    assert run(page_view(stack.url("/counter"))).document.title == "Counter, saved"


def test_a_probe_takes_only_an_http_answer_for_an_answer():
    """A TCP connection to a port nobody listens on yet can, in the ephemeral range, connect to itself and read its
    own request back: that, like any answer that is not HTTP, is no answer (it stopped a readiness wait once)."""

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)

        def echo() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.sendall(conn.recv(4096))

        import threading

        threading.Thread(target=echo, daemon=True).start()
        assert topology.Endpoint("127.0.0.1", listener.getsockname()[1]).get_status("/", timeout=5) is None
