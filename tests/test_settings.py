"""The settings model: defaults, layers, and a clear error for each bad setting, before anything starts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from bokeh_stack.config import model
from bokeh_stack.config.settings import SettingsError, load
from harness.stack import ROOT, SHIPPED_APPS, counter_apps


def problems(**kwargs) -> list[str]:
    with pytest.raises(SettingsError) as error:
        load(**kwargs)
    return error.value.problems


def test_zero_configuration_serves_every_app_from_one_pool():
    s = load(environ={}, cwd=SHIPPED_APPS.parent)
    assert s.apps_dir == SHIPPED_APPS
    assert [p.name for p in s.pools] == ["default"]
    assert s.apps == ("cosine", "explorer", "large_data", "lifecycle", "press_me", "random_walk", "streaming")
    assert s.worker_ports == [5100, 5101]
    assert s.port == 8080 and s.worker_address == "127.0.0.1"
    assert s.public_origins == ("localhost:8080", "127.0.0.1:8080")
    assert s.role == "all" and s.user == ""


def test_the_runtime_dir_defaults_to_the_users_state_directory(tmp_path):
    """`bokeh-stack up` run anywhere writes nothing where it is run."""
    s = load(environ={"XDG_STATE_HOME": str(tmp_path / "state")}, overrides={"apps_dir": str(SHIPPED_APPS)})
    assert s.runtime_dir == tmp_path / "state" / "bokeh-stack"
    assert s.secret_file == s.runtime_dir / "secret" and s.log_dir == s.runtime_dir / "logs"
    assert load(environ={}, overrides={"apps_dir": str(SHIPPED_APPS)}).runtime_dir == (
        Path.home() / ".local" / "state" / "bokeh-stack"
    )


def test_defaults_yaml_is_written_from_the_model():
    """defaults.yaml, what users read, holds every setting's default and documentation as the model defines them:
    regenerate it with `python -m bokeh_stack.config.model > bokeh_stack/config/defaults.yaml`."""
    assert (ROOT / "bokeh_stack" / "config" / "defaults.yaml").read_text() == model.defaults_yaml()
    assert yaml.safe_load(model.defaults_yaml()) == model.defaults()


def test_every_setting_has_its_documentation():
    groups = [model.Settings, *(f.annotation for f in model.Settings.model_fields.values() if _is_group(f.annotation))]
    undocumented = [f"{g.__name__}.{n}" for g in groups for n, f in g.model_fields.items() if not f.description]
    assert undocumented == []


def _is_group(annotation) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, model.Group)


def test_the_readmes_settings_table_names_settings_there_are():
    """Each key in the README's table (`auth.oidc.issuer`, `.client_id`: a sibling of the key before) is one."""
    named = set()
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("| `"):
            parent = ""
            for key in re.findall(r"`([a-z_.]+)`", line.split("|")[1]):
                key = parent + key if key.startswith(".") else key
                parent = key.rpartition(".")[0]
                named.add(key)
    assert named and named - settings_keys(model.Settings) == set()


def settings_keys(group, prefix: str = "") -> set[str]:
    keys = set()
    for name, f in group.model_fields.items():
        keys.add(prefix + name)
        if _is_group(f.annotation):
            keys |= settings_keys(f.annotation, f"{prefix}{name}.")
    return keys


def test_layers_override_in_order_file_environment_flags(tmp_path):
    f = tmp_path / "settings.yaml"
    f.write_text(f"apps_dir: {SHIPPED_APPS}\nworkers: 3\nport: 9000\nsession: {{keep_alive_ms: 20000}}\n")
    s = load(f, environ={"BOKEH_STACK_PORT": "9100", "BOKEH_STACK_SESSION__UNUSED_LIFETIME_MS": "5000"})
    assert (s.workers, s.port, s.session.keep_alive_ms, s.session.unused_lifetime_ms) == (3, 9100, 20000, 5000)
    assert s.session.check_unused_ms == 5000  # untouched default
    s = load(f, environ={"BOKEH_STACK_PORT": "9100"}, overrides={"port": 9200})
    assert s.port == 9200
    # The settings file may also come from the environment.
    assert load(environ={"BOKEH_STACK_SETTINGS": str(f)}).workers == 3


def test_relative_paths_in_a_settings_file_are_relative_to_it(tmp_path):
    counter_apps(tmp_path / "apps", ["one"])
    (tmp_path / "etc").mkdir()
    f = tmp_path / "etc" / "settings.yaml"
    f.write_text("apps_dir: ../apps\nruntime_dir: ../run\n")
    s = load(f, environ={}, cwd=SHIPPED_APPS)
    assert s.apps_dir == tmp_path / "apps" and s.runtime_dir == tmp_path / "run"
    assert s.log_dir == tmp_path / "run" / "logs"


def test_unknown_keys_are_named_with_a_suggestion(tmp_path):
    f = tmp_path / "settings.yaml"
    f.write_text(f"apps_dir: {SHIPPED_APPS}\nwokers: 3\nsession: {{keepalive_ms: 1}}\n")
    found = problems(settings_file=f, environ={"BOKEH_STACK_PROT": "1"})
    assert f"unknown setting 'wokers' in {f} (did you mean 'workers'?)" in found
    assert f"unknown setting 'session.keepalive_ms' in {f} (did you mean 'session.keep_alive_ms'?)" in found
    assert "unknown setting 'prot' in the environment (did you mean 'port'?)" in found


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"workers": 0}, "workers must be at least 1, got 0"),
        ({"workers": "two"}, "workers must be a whole number, got 'two'"),
        ({"workers": True}, "workers must be a whole number, got True"),
        ({"port": 5101}, "port 5101 is used twice: by nginx (port) and by pool default's workers"),
        ({"port": 70000}, "port must be a port number from 1 to 65535, got 70000"),
        ({"base_port": 65535, "workers": 2}, "pool default: ports 65535-65536 run past 65535"),
        ({"prefix": "apps/"}, "prefix must be empty or a path like /dashboards (no trailing slash), got 'apps/'"),
        ({"server_names": []}, "server_names must name at least one host"),
        ({"server_names": ["bad host;"]}, "server_names: 'bad host;' is not a host name or address"),
        ({"worker_address": "localhost"}, "worker_address must be an IP address, got 'localhost'"),
        ({"public_origins": ["http://x"]}, "public_origins: 'http://x' is not host[:port]"),
        ({"session": {"keep_alive_ms": 0}}, "session.keep_alive_ms must be positive, got 0"),
        ({"runtime_dir": "/tmp/a;b"}, "runtime_dir: '/tmp/a;b' contains characters not allowed in a path here: ';'"),
        ({"role": "nginx"}, "role must be one of all, balancer, worker, got 'nginx'"),
        ({"user": "bad user"}, "user must be a user name (or empty: the user who starts the stack), got 'bad user'"),
        ({"worker_fix_mismatch": "ignore"}, "worker_fix_mismatch must be stop or warn, got 'ignore'"),
        (
            {"ops": {"allow": ["10.0.0.0/33"]}},
            "ops.allow: '10.0.0.0/33' is not an address or network (CIDR, e.g. 10.0.0.0/8)",
        ),
        ({"ops": {"address": "ops.local"}}, "ops.address must be an IP address, got 'ops.local'"),
        ({"session": {"pass_cookies": ["a\n--prefix"]}}, "session.pass_cookies: 'a\\n--prefix' is not a cookie name"),
        ({"session": {"pass_headers": ["X Api"]}}, "session.pass_headers: 'X Api' is not a header name"),
        ({"nginx": {"ws_open_burst": 0}}, "nginx.ws_open_burst must be positive, got 0"),
        ({"ops": {"port": 8080}}, "ops.port and nginx (port) must differ, both are 8080"),
        ({"ops": {"port": 5100}}, "port 5100 is used twice: by nginx (ops.port) and by pool default's workers"),
    ],
)
def test_bad_settings_get_a_clear_error(overrides, message):
    assert message in problems(environ={}, overrides={"apps_dir": str(SHIPPED_APPS), **overrides})


def test_an_apps_dir_without_apps_is_refused(tmp_path):
    assert problems(environ={}, overrides={"apps_dir": str(tmp_path)}) == [
        f"apps_dir {tmp_path} holds no Bokeh app (a subdirectory with a main.py, or a .py or .ipynb file), "
        "and function_apps names none"
    ]
    assert problems(environ={}, overrides={"apps_dir": str(tmp_path / "missing")}) == [
        f"apps_dir {tmp_path / 'missing'} is not a directory (it may be empty when function_apps are set)"
    ]


def test_app_names_must_be_url_paths_and_not_the_stacks_own(tmp_path):
    counter_apps(tmp_path, ["my app", "static"])
    found = problems(environ={}, overrides={"apps_dir": str(tmp_path)})
    assert "app directory 'my app' cannot be a URL path: use letters, digits, '-' and '_'" in found
    assert "app directory 'static' clashes with the stack's own /static/ path: rename it" in found


def test_pools_take_their_apps_and_consecutive_ports(tmp_path):
    apps = counter_apps(tmp_path, ["a", "b", "c", "d"])
    s = load(
        environ={},
        overrides={
            "apps_dir": str(apps),
            "workers": 2,
            "pools": {"heavy": {"apps": ["c"], "workers": 3}, "solo": {"apps": ["d"], "base_port": 6000}},
        },
    )
    assert [(p.name, p.apps, list(p.ports)) for p in s.pools] == [
        ("default", ("a", "b"), [5100, 5101]),
        ("heavy", ("c",), [5102, 5103, 5104]),
        ("solo", ("d",), [6000]),
    ]
    assert s.pool_of("c").program == "bokeh_heavy"


def test_bad_pools_get_clear_errors(tmp_path):
    apps = counter_apps(tmp_path, ["a", "b"])
    found = problems(
        environ={},
        overrides={
            "apps_dir": str(apps),
            "pools": {
                "one": {"apps": ["a", "zzz"]},
                "two": {"apps": ["a"], "workers": 0},
                "Bad-Name": {"apps": ["b"], "wrkers": 1},
                "clash": {"apps": ["b"], "base_port": 5100},
            },
        },
    )
    assert "pools.two.workers must be a whole number of at least 1, got 0" in found
    keys = "apps, workers, min_workers, max_workers, sessions_per_worker, idle_timeout_s, recycle, base_port"
    assert f"unknown setting 'pools.Bad-Name.wrkers' in the command line (a pool has {keys})" in found
    # Each value first; then, once every value is good, how the pools fit the apps and each other.
    found = problems(environ={}, overrides={"apps_dir": str(apps), "pools": {"one": {"apps": ["a", "zzz"]}}})
    assert found == ["pools.one.apps: no app 'zzz' in apps_dir (apps: a, b)"]


def test_apps_left_out_of_resume_must_be_apps(tmp_path):
    apps = counter_apps(tmp_path, ["a", "b"])
    found = problems(environ={}, overrides={"apps_dir": str(apps), "session": {"resume_except": ["b", "zzz"]}})
    assert found == ["session.resume_except: no app 'zzz' in apps_dir (apps: a, b)"]
    found = problems(environ={}, overrides={"apps_dir": str(apps), "session": {"store": "redis://me:pw@host/0"}})
    assert found == [
        "session.store must be empty (a directory under runtime_dir), off, or redis://HOST[:PORT][/DB] (no password: "
        "it comes from the stack's secret), got 'redis://me:pw@host/0'"
    ]


def test_port_clash_between_pools(tmp_path):
    apps = counter_apps(tmp_path, ["a", "b"])
    found = problems(
        environ={}, overrides={"apps_dir": str(apps), "pools": {"other": {"apps": ["b"], "base_port": 5100}}}
    )
    assert found == ["port 5100 is used twice: by pool default's workers and by pool other's workers"]


def test_an_app_in_two_pools(tmp_path):
    apps = counter_apps(tmp_path, ["a", "b"])
    found = problems(
        environ={}, overrides={"apps_dir": str(apps), "pools": {"x": {"apps": ["a"]}, "y": {"apps": ["a"]}}}
    )
    assert found == ["app 'a' is in two pools: x and y"]


def test_a_broken_settings_file(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("workers: [1\n")
    assert problems(settings_file=f, environ={})[0].startswith(f"settings file {f} is not valid YAML")
    f.write_text("- 1\n")
    assert problems(settings_file=f, environ={}) == [f"settings file {f} must hold a mapping of settings, not list"]
    assert problems(settings_file=tmp_path / "none.yaml", environ={}) == [
        f"cannot read settings file {tmp_path / 'none.yaml'}: No such file or directory"
    ]


# Variables the compose files use that are not settings: where the port is published, how many worker tasks.
COMPOSE_ONLY = {"BOKEH_STACK_PUBLISH", "BOKEH_STACK_REPLICAS"}
COMPOSE_FILES = ("docker-compose.yml", "docker-compose.override.yml", "docker-stack.yml")


def _env_fallbacks() -> list[tuple[str, str, str]]:
    found = [
        (name, n, v)
        for name in COMPOSE_FILES
        for n, v in re.findall(r"\$\{(BOKEH_STACK_\w+):-([^}]*)\}", (ROOT / name).read_text())
    ]
    example = (ROOT / ".env.example").read_text()
    found += [(".env.example", n, v) for n, v in re.findall(r"^(BOKEH_STACK_\w+)=(.*)$", example, re.M)]
    return [f for f in found if f[1] not in COMPOSE_ONLY]


@pytest.mark.parametrize("source, name, value", _env_fallbacks(), ids=lambda v: str(v))
def test_compose_and_env_example_restate_only_the_defaults(source, name, value):
    """What docker-compose.yml falls back to, and .env.example shows, is the default itself (defaults.yaml)."""
    base = {"BOKEH_STACK_APPS_DIR": str(SHIPPED_APPS), "BOKEH_STACK_RUNTIME_DIR": "/tmp/unused"}
    assert load(environ={**base, name: value}) == load(environ=base), f"{source}: {name}={value}"


def test_the_pillar_example_holds_valid_settings():
    pillar = yaml.safe_load((ROOT / "salt" / "pillar.example").read_text())
    settings = load(environ={}, overrides={**pillar["bokeh"]["settings"], "apps_dir": str(SHIPPED_APPS)})
    assert settings.port == 80 and [p.name for p in settings.pools] == ["default", "heavy"]


def test_the_compose_images_are_tagged_with_the_package_version():
    from bokeh_stack import __version__

    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert {service["image"].rsplit(":", 1)[1] for service in services.values()} == {__version__}
