"""The bokeh-stack command as a user runs it."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from harness.stack import SHIPPED_APPS, counter_apps, free_ports, wait_for


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


def test_check_names_the_app_that_fails(tmp_path):
    apps = counter_apps(tmp_path / "apps", ["good"])
    (apps / "broken").mkdir()
    (apps / "broken" / "main.py").write_text("import numpy\nraise RuntimeError('the instrument is offline')\n")
    result = bokeh_stack("check", "--apps", str(apps), "--runtime-dir", str(tmp_path / "run"))
    assert result.returncode == 1
    assert "app good: ok" in result.stdout
    assert "app broken: FAILED" in result.stdout and "the instrument is offline" in result.stdout
    assert "configs: ok" in result.stdout
    assert "1 app(s) failed to build their document" in result.stderr


def test_check_passes_for_the_shipped_apps(tmp_path):
    result = bokeh_stack("check", "--apps", str(SHIPPED_APPS), "--runtime-dir", str(tmp_path / "run"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(": ok") == 7  # settings, 5 apps, configs


@pytest.mark.stack
def test_up_refuses_a_port_in_use(tmp_path):
    port = free_ports(3)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port + 2))
        taken.listen()
        result = bokeh_stack(
            "up", "--apps", str(SHIPPED_APPS), "--port", str(port), "--base-port", str(port + 1),
            "--runtime-dir", str(tmp_path / "run"),
        )  # fmt: skip
    assert result.returncode == 1
    assert f"port {port + 2} on 127.0.0.1, wanted by a worker, is not free" in result.stderr


@pytest.mark.stack
def test_status_then_sigterm_stops_everything(stacks, tmp_path):
    stack = stacks(counter_apps(tmp_path / "apps", ["counter"]), workers=2)
    result = bokeh_stack("status", "--settings", str(stack.settings_file))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1].split() == ["WORKER", "POOL", "STATE", "PID", "PORT", "UPTIME", "PROBE"]
    workers = [line.split() for line in lines[2:]]
    # STARTING until a worker has run for startsecs (30 s), though it answers its probe long before.
    assert [(w[0], w[4]) for w in workers] == [(f"bokeh_default_{p}", str(p)) for p in stack.settings.worker_ports]
    assert all(w[2] in ("STARTING", "RUNNING") for w in workers)
    assert all(w[-1] == "ms" for w in workers)
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
