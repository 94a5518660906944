"""Started as root: app code never runs as root unless the settings say so twice; the service user reaches what it
needs through directories opened to it alone, for search only."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bokeh_stack.config.plan import SERVICE_USER, RunPlan
from bokeh_stack.config.settings import load
from bokeh_stack.provisioning import privileges
from harness.stack import SHIPPED_APPS

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="only root chooses who runs the workers")


def plan_for(tmp_path, euid: int = 0, **overrides) -> RunPlan:
    values = {"apps_dir": str(SHIPPED_APPS), "runtime_dir": str(tmp_path / "run"), **overrides}
    return RunPlan(load(environ={}, overrides=values), euid=euid)


def test_started_as_root_the_workers_and_nginx_run_as_the_service_user(tmp_path):
    root = plan_for(tmp_path)
    assert root.worker_user == root.nginx_user == root.app_user == SERVICE_USER
    assert root.supervisord_user == "root"
    someone = plan_for(tmp_path, euid=1000)
    assert someone.worker_user is someone.nginx_user is someone.app_user is None, "a user runs everything as itself"


def test_app_code_never_runs_as_root_unless_allowed_explicitly(tmp_path):
    with pytest.raises(privileges.PrivilegeError, match="refusing to run the apps' code as root.*allow_root: true"):
        privileges.check(plan_for(tmp_path, user="root"), print)
    privileges.check(plan_for(tmp_path, user="root", allow_root=True), print)  # said twice: allowed


def test_up_as_root_with_user_root_starts_nothing(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("only root can name the workers' user")
    result = subprocess.run(
        [sys.executable, "-m", "bokeh_stack", "up", "--apps", str(SHIPPED_APPS), "--user", "root"]
        + ["--runtime-dir", str(tmp_path / "run"), "--port", "1", "--ops-port", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "refusing to run the apps' code as root" in result.stderr
    assert not (tmp_path / "run" / "supervisord.conf").exists()


@as_root
def test_a_closed_directory_is_opened_to_the_service_user_for_search_only(tmp_path):
    privileges.ensure_service_user(plan_for(tmp_path), print)
    closed = tmp_path / "closed"
    inner = closed / "apps"
    inner.mkdir(parents=True)
    closed.chmod(0o700)
    said: list[str] = []
    privileges.open_to(SERVICE_USER, [inner], said.append)
    assert any(str(closed) in line and f"setfacl -x u:{SERVICE_USER}" in line for line in said), said
    service, nobody = privileges.become(SERVICE_USER), privileges.become("nobody")
    assert privileges._can(service, "-x", closed) and privileges._can(service, "-r", inner)
    assert not privileges._can(service, "-r", closed), "search only: it cannot list what else is there"
    assert not privileges._can(nobody, "-x", closed), "opened to that user alone"
    again: list[str] = []
    privileges.open_to(SERVICE_USER, [inner], again.append)
    assert again == [], "nothing to open twice"


@as_root
def test_what_the_service_user_cannot_read_is_named_not_opened(tmp_path):
    secret = tmp_path / "apps"
    secret.mkdir()
    secret.chmod(0o700)
    with pytest.raises(privileges.PrivilegeError, match=f"cannot read {secret}"):
        privileges.open_to(SERVICE_USER, [secret], print)
