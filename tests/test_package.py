"""bokeh-stack as a user installs it: the wheel built from this checkout, in a fresh venv outside the repository,
serving the user's own apps from another directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import zipfile

import pytest

from bokeh_stack import __version__
from harness.pageview import page_view
from harness.stack import ROOT, counter_apps, free_ports, run, wait_for, writable_record

pytestmark = pytest.mark.stack


def test_the_wheel_holds_what_the_stack_needs_at_run_time(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    templates = {
        f"bokeh_stack/templates/{p.relative_to(ROOT)}"
        for d in ("nginx", "supervisor", "prometheus", "redis")
        for p in (ROOT / d).glob("*.j2")
    }
    assert templates and templates <= names
    assert "bokeh_stack/config/defaults.yaml" in names
    assert not [n for n in names if n.startswith(("tests/", "harness/", "bench/"))]


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory):
    venv = tmp_path_factory.mktemp("user") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "-r", str(ROOT / "requirements.lock"), str(wheel)], check=True, timeout=600)
    return venv / "bin" / "bokeh-stack"


def test_version(installed):
    from bokeh import __version__ as bokeh_version

    result = subprocess.run([str(installed), "--version"], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == f"bokeh-stack {__version__} (bokeh {bokeh_version})"


def test_up_from_any_directory_serves_the_users_apps_and_writes_nothing_there(installed, tmp_path):
    apps = counter_apps(tmp_path / "my-apps", ["dashboard"])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    port = free_ports(4)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "BOKEH_SECRET_KEY")}
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    env["COUNTER_RECORD_FILE"] = str(writable_record(tmp_path / "executions.txt"))
    command = [str(installed), "up", "--apps", str(apps), "--port", str(port), "--base-port", str(port + 1)]
    command += ["--ops-port", str(port + 3)]
    log = tmp_path / "up.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, cwd=elsewhere, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    try:
        wait_for(lambda: b"ready at" in log.read_bytes() or proc.poll() is not None, 90, "the stack to be ready")
        assert proc.poll() is None, log.read_text()
        assert run(page_view(f"http://127.0.0.1:{port}/dashboard")).document.roots
        assert list(elsewhere.iterdir()) == [], "up wrote into the directory it was run from"
        state = tmp_path / "state" / "bokeh-stack"
        assert (state / "supervisord.conf").is_file() and (state / "secret").is_file()
        site_packages = str(installed.parent.parent)
        assert site_packages in (state / "supervisord.conf").read_text(), "workers run on the user's venv"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        pid_file = tmp_path / "state" / "bokeh-stack" / "supervisord.pid"
        if pid_file.exists():
            try:
                os.killpg(int(pid_file.read_text()), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
