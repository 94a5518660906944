"""The Salt formula rendered by a real salt-call (masterless, on this machine; nothing applied), for a single
host and for the hosts of a multi-host deployment; the settings it writes render configs nginx accepts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bokeh_stack.config import topology
from bokeh_stack.config.plan import RunPlan
from bokeh_stack.config.settings import load
from bokeh_stack.provisioning import render as rendering
from harness.stack import ROOT, SHIPPED_APPS

pytestmark = pytest.mark.salt
SALT_CALL = ROOT / ".venv-salt" / "bin" / "salt-call"
STACK, SETTINGS_FILE = "/opt/bokeh-stack/venv/bin/bokeh-stack", "/etc/bokeh-stack/settings.yaml"


def show_sls(tmp_path: Path, pillar: dict, sls: str = "bokeh") -> dict[str, dict]:
    """state ID -> {state function: [arguments]} as Salt compiles the formula for this pillar."""
    if not SALT_CALL.exists():
        pytest.fail("Salt is not installed: `make test` makes .venv-salt")
    conf, pillar_dir = tmp_path / "conf", tmp_path / "pillar"
    conf.mkdir(parents=True)
    pillar_dir.mkdir(parents=True)
    (conf / "minion").write_text(yaml.safe_dump({
        "file_client": "local", "id": "test-host", "root_dir": str(tmp_path / "root"),
        "file_roots": {"base": [str(ROOT / "salt"), str(ROOT)]}, "pillar_roots": {"base": [str(pillar_dir)]},
    }))  # fmt: skip
    (pillar_dir / "top.sls").write_text("base:\n  '*':\n    - bokeh\n")
    (pillar_dir / "bokeh.sls").write_text(yaml.safe_dump({"bokeh": pillar}))
    proc = subprocess.run(
        [str(SALT_CALL), "--local", "-c", str(conf), "--out=json", "--retcode-passthrough", "state.show_sls", sls],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    compiled = json.loads(proc.stdout)["local"]
    assert isinstance(compiled, dict), compiled
    return {
        state_id: {fn: args for fn, args in body.items() if not fn.startswith("__")}
        for state_id, body in compiled.items()
    }


def arg(state: dict, name: str):
    [args] = state.values()
    return next(a[name] for a in args if isinstance(a, dict) and name in a)


def rendered_settings(states: dict, tmp_path: Path) -> RunPlan:
    """The settings file the formula writes, loaded by bokeh-stack and rendered (the apps from this checkout)."""
    settings = yaml.safe_load(arg(states["bokeh-config-settings"], "contents"))
    assert settings["user"] == "bokeh"  # the formula's system user, which this machine does not have
    settings.update(apps_dir=str(SHIPPED_APPS), runtime_dir=str(tmp_path / "run"), log_dir="", user="")
    path = tmp_path / "settings.yaml"
    path.write_text(yaml.safe_dump(settings))
    result = RunPlan(load(path, environ={}))
    rendering.render_checked(result)
    return result


def asked(states: dict, state_id: str, settings: Path) -> bool:
    """Whether a state guarded by `onlyif: bokeh-stack plan --runs ...` runs, as bokeh-stack answers for these
    settings."""
    command = arg(states[state_id], "onlyif").split()
    assert command[:3] == [STACK, "plan", "--runs"] and command[4:] == ["--settings", SETTINGS_FILE], command
    result = subprocess.run([sys.executable, "-m", "bokeh_stack", *command[1:4], "--settings", str(settings)])
    assert result.returncode in (0, 1)
    return result.returncode == 0


def test_single_host_default_pillar(tmp_path):
    states = show_sls(tmp_path, {})
    assert list(states) == [
        "bokeh-package-installed", "bokeh-user-group", "bokeh-user", "bokeh-venv-lock", "bokeh-venv-wheel",
        "bokeh-venv-created", "bokeh-venv-dependencies", "bokeh-venv-package", "bokeh-package-nginx",
        "bokeh-package-distro-nginx-stopped", "bokeh-package-redis", "bokeh-package-distro-redis-stopped",
        "bokeh-config-directory", "bokeh-config-settings", "bokeh-apps",
        "bokeh-config-secret", "bokeh-config-applied", "bokeh-service-running",
    ]  # fmt: skip
    assert "nginx" in arg(states["bokeh-package-nginx"], "pkgs")
    stack, settings = STACK, f"--settings {SETTINGS_FILE}"
    # Every command is bokeh-stack's, given only the settings file: it derives every path from it.
    assert arg(states["bokeh-config-applied"], "name") == f"{stack} apply --stateful {settings}"
    assert arg(states["bokeh-config-secret"], "name") == f"{stack} secret --stateful {settings}"
    assert arg(states["bokeh-service-running"], "name") == f"{stack} supervisord --daemon {settings}"
    assert arg(states["bokeh-service-running"], "unless") == f"{stack} status --quiet {settings}"
    assert arg(states["bokeh-venv-wheel"], "source") == "salt://dist"
    layout = rendered_settings(states, tmp_path)
    assert layout.settings.port == 80 and layout.settings.apps == tuple(sorted(p.name for p in SHIPPED_APPS.iterdir()))
    assert layout.settings.role == "all"
    # What runs here is bokeh-stack's to say: the formula asks it.
    assert asked(states, "bokeh-package-nginx", tmp_path / "settings.yaml")
    assert asked(states, "bokeh-config-secret", tmp_path / "settings.yaml")
    assert not asked(states, "bokeh-package-redis", tmp_path / "settings.yaml"), "no Redis unless redis.run"


def test_multi_host_pillars(tmp_path):
    balancer = show_sls(tmp_path / "b", {
        "role": "balancer", "secret": "",
        "settings": {"worker_hosts": ["10.0.0.11", "10.0.0.12"], "server_names": ["dashboards.example.org"]},
    })  # fmt: skip
    layout = rendered_settings(balancer, tmp_path / "b")
    assert not asked(balancer, "bokeh-config-secret", tmp_path / "b" / "settings.yaml"), "a balancer needs no secret"
    assert asked(balancer, "bokeh-package-nginx", tmp_path / "b" / "settings.yaml")
    assert layout.settings.role == "balancer" and not layout.with_workers
    conf = layout.nginx_site_conf.read_text()
    assert "server 10.0.0.11:5100 " in conf and "server 10.0.0.12:5101 " in conf

    worker = show_sls(tmp_path / "w", {
        "role": "worker", "secret": "x" * 48,
        "settings": {"worker_address": "10.0.0.11", "server_names": ["dashboards.example.org"]},
    })  # fmt: skip
    assert "nginx" not in arg(worker["bokeh-package-installed"], "pkgs")
    # The pillar's secret reaches bokeh-stack on its standard input: never on a command line, never in output.
    assert arg(worker["bokeh-config-secret"], "stdin") == "x" * 48
    assert "x" * 48 not in arg(worker["bokeh-config-secret"], "name")
    assert arg(worker["bokeh-config-secret"], "output_loglevel") == "quiet"
    layout = rendered_settings(worker, tmp_path / "w")
    assert not asked(worker, "bokeh-package-nginx", tmp_path / "w" / "settings.yaml"), "a worker host has no nginx"
    args = (layout.args_dir / "bokeh_default.args").read_text().splitlines()
    assert args[args.index("--address") + 1] == "10.0.0.11"
    # Bokeh reads a missing port as :80, on both sides: https://host (443) must be listed without one.
    assert args[args.index("--allow-websocket-origin") + 1] == "dashboards.example.org"
    supervisord = layout.supervisord_conf.read_text()
    assert "[program:bokeh_default]" in supervisord and "[program:nginx]" not in supervisord
    assert not asked(worker, "bokeh-package-redis", tmp_path / "w" / "settings.yaml")

    # The worker host that also runs the workers' Redis: Debian's redis-server, under the stack's supervisord.
    with_redis = show_sls(tmp_path / "r", {
        "role": "worker", "secret": "x" * 48,
        "settings": {"worker_address": "10.0.0.11", "redis": {"run": True, "address": "10.0.0.11"},
                     "session": {"store": "redis://10.0.0.11:6379/0"}},
    })  # fmt: skip
    supervisord = rendered_settings(with_redis, tmp_path / "r").supervisord_conf.read_text()
    assert f"[program:{topology.REDIS}]" in supervisord
    assert asked(with_redis, "bokeh-package-redis", tmp_path / "r" / "settings.yaml")
    assert arg(with_redis["bokeh-package-redis"], "pkgs") == ["redis-server"]


def test_a_pillar_with_sign_in_keeps_its_users_passwords_off_command_lines(tmp_path):
    password = "a long passphrase"
    states = show_sls(tmp_path, {
        "role": "balancer",
        "settings": {"worker_hosts": ["10.0.0.11"], "auth": {"mode": "password", "session_hours": 8},
                     "access": {"streaming": {"groups": ["lab"]}}, "trusted_proxies": ["10.0.0.0/8"]},
        "users": {"alice": {"password": password, "groups": ["lab"]}},
    })  # fmt: skip
    user = states["bokeh-signin-user-alice"]
    assert arg(user, "stdin") == password and arg(user, "output_loglevel") == "quiet"
    assert password not in arg(user, "name") and "--group lab" in arg(user, "name")
    assert "--stateful" in arg(user, "name")
    layout = rendered_settings(states, tmp_path)
    assert not asked(states, "bokeh-config-secret", tmp_path / "settings.yaml"), "the sign-in key is its own"
    assert layout.settings.auth.session_hours == 8 and layout.with_signin
    conf = layout.nginx_site_conf.read_text()
    assert "set_real_ip_from 10.0.0.0/8;" in conf and "auth_request /_bokeh_stack/signin/check/streaming;" in conf
    assert f"[program:{topology.SIGNIN}]" in layout.supervisord_conf.read_text()


def test_clean_undoes_each_concern_in_the_reverse_order(tmp_path):
    states = show_sls(tmp_path, {}, sls="bokeh.clean")
    assert list(states) == ["bokeh-clean-stopped", "bokeh-clean-config", "bokeh-clean-package", "bokeh-clean-user"]
    removed = arg(states["bokeh-clean-config"], "names")
    assert {"/etc/bokeh-stack", "/var/lib/bokeh-stack", "/var/log/bokeh-stack"} <= set(removed)
    assert arg(states["bokeh-clean-package"], "name") == "/opt/bokeh-stack"
