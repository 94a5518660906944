"""The settings of a deployment, from every layer: the model's defaults (config/model.py, which defines every
setting), a settings file (YAML, the same keys), BOKEH_STACK_* environment variables (nested keys joined by a
double underscore, values read as YAML) and command-line flags, each over the one before; and, for every command
after `up`, the record of what `up` was started with. Every layer names its unknown keys (with a suggestion); the
model checks every value; then what goes together, the host's files, the apps and the pools' ports are checked
(config/checks.py, discovery.py, pools.py). Every problem found is reported at once, values before the rest."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from bokeh_stack.config import model
from bokeh_stack.config.checks import check_access, check_app_names, check_host, model_problems, origin
from bokeh_stack.config.discovery import AppSource, check_apps, check_python_path
from bokeh_stack.config.files import write_atomically
from bokeh_stack.config.pools import Pool, build_pools, check_port_clashes
from bokeh_stack.config.topology import ops_endpoint, url_host
from bokeh_stack.config.values import runs_nginx

ENV_PREFIX = model.ENV_PREFIX
ENV_SETTINGS_FILE = f"{ENV_PREFIX}SETTINGS"
POOL_KEYS = tuple(model.PoolSpec.model_fields)
PATH_KEYS = ("apps_dir", "runtime_dir", "log_dir", "secret_file")


class SettingsError(ValueError):
    """Invalid settings; `problems` lists every one found."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid settings:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True)
class Settings:
    """The settings of a deployment: the model as given (`given`: config/model.py defines every setting, its
    default and its documentation), and the settings resolved from it. Every setting reads as an attribute
    (s.port, s.session.keep_alive_ms); the fields below hold the resolved form of the settings of the same name:
    paths absolute, empty ones derived, the pools built (the default pool first), the apps found."""

    given: model.Settings
    apps_dir: Path
    function_apps: Mapping[str, str]
    python_path: tuple[Path, ...]
    runtime_dir: Path
    log_dir: Path
    secret_file: Path
    public_origins: tuple[str, ...]
    worker_hosts: tuple[str, ...]
    pools: tuple[Pool, ...]
    access: Mapping[str, Mapping[str, tuple[str, ...]]]
    # Not settings: every app's code, by name (apps_dir and function_apps) ...
    sources: Mapping[str, AppSource] = field(default_factory=dict)
    # ... and what these settings were made of, for write_record (the file, the environment, the flags).
    record: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __getattr__(self, name: str) -> Any:
        # Only for what is not a field or a property: a setting as given.
        if name == "given" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.given, name)

    @property
    def tls_on(self) -> bool:
        return bool(self.tls.certificate)

    @property
    def public_port(self) -> int:
        """The port browsers load the apps from: HTTPS's when TLS is on."""
        return self.tls.port if self.tls_on else self.port

    @property
    def auth_on(self) -> bool:
        return self.auth.mode != "none"

    @property
    def users_file(self) -> Path:
        return Path(self.auth.users_file) if self.auth.users_file else self.runtime_dir / "users.json"

    @property
    def ops_server_names(self) -> tuple[str, ...]:
        """The Host names the ops listener answers to: setting ops.server_names (or localhost and the loopback and
        listening addresses), and always the address this host itself reaches it at (the ops process, status)."""
        names = list(self.ops.server_names) or ["localhost", "127.0.0.1", "::1", self.ops.address]
        names.append(ops_endpoint(self).host)
        return tuple(dict.fromkeys(url_host(n) for n in names if n not in ("0.0.0.0", "::")))

    @property
    def apps(self) -> tuple[str, ...]:
        return tuple(sorted(app for pool in self.pools for app in pool.apps))

    @property
    def worker_sockets(self) -> bool:
        """Workers on unix sockets: nginx and the workers on this one host (setting unix_sockets)."""
        return self.unix_sockets and self.role == "all" and self.worker_hosts == (self.worker_address,)

    @property
    def worker_ports(self) -> list[int]:
        return [port for pool in self.pools for port in pool.ports]

    def pool_of(self, app: str) -> Pool:
        return next(pool for pool in self.pools if app in pool.apps)


def load(
    settings_file: str | os.PathLike | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    cwd: Path | None = None,
    recorded: bool = False,
) -> Settings:
    """Merge every layer and validate. Raises SettingsError naming each problem and where it came from.

    recorded=True: what `bokeh-stack up` was started with (its settings file and its environment and flags,
    recorded in the runtime dir) comes first, under what this call is given: so a command with nothing but the
    runtime dir, or nothing at all in the default place, acts on the running stack as it is."""
    environ = os.environ if environ is None else environ
    cwd = Path.cwd() if cwd is None else cwd
    schema = model.defaults()
    problems: list[str] = []

    settings_file = settings_file or environ.get(ENV_SETTINGS_FILE)
    given = [("the environment", _environment_layer(environ, schema, problems), cwd)]
    given.append(("the command line", dict(overrides or {}), cwd))
    file_layer = None
    if settings_file:
        path = Path(settings_file)
        file_layer = (str(path), _read_settings_file(path, problems), path.resolve().parent)
    if recorded:
        record_path = record_file(_runtime_dir_of([file_layer, *given], environ))
        record = _read_record(record_path, problems)
        if file_layer is None and record.get("settings_file"):
            path = Path(record["settings_file"])
            file_layer = (str(path), _read_settings_file(path, problems), path.parent)
        given.insert(0, (f"{record_path} (recorded by bokeh-stack up)", record.get("settings", {}), cwd))
    layers = ([file_layer] if file_layer else []) + given

    merged = copy.deepcopy(schema)
    path_base = {key: cwd for key in PATH_KEYS}
    for source, layer, base in layers:
        _merge_layer(merged, schema, layer, source, problems, path_base, base)
    try:
        settings = _build(merged, path_base, environ)
    except SettingsError as e:
        raise SettingsError(problems + e.problems) from None
    if problems:
        raise SettingsError(problems)
    record = {"settings_file": str(Path(file_layer[0]).resolve()) if file_layer else None, "settings": {}}
    for _, layer, base in given:
        _deep_merge(record["settings"], _absolute_paths(layer, base))
    return dataclasses.replace(settings, record=record)


def record_file(runtime_dir: Path) -> Path:
    """Where `bokeh-stack up` records what it was started with (see load's `recorded`)."""
    return runtime_dir / "settings.yaml"


def write_record(settings: Settings) -> Path:
    """Record what these settings were made of (their file and the environment and flags given), in the runtime
    dir: every later command acts on that stack with them."""
    path = record_file(settings.runtime_dir)
    text = "# What bokeh-stack up was started with; apply and reload rewrite it. Do not edit: change the settings.\n"
    write_atomically(path, text + yaml.safe_dump(settings.record, sort_keys=True))
    return path


def _runtime_dir_of(layers: list, environ: Mapping[str, str]) -> Path:
    """The runtime dir the layers name (the last one that sets it wins), before anything is merged."""
    for layer in reversed([layer for layer in layers if layer]):
        _, values, base = layer
        if values.get("runtime_dir"):
            return (base / str(values["runtime_dir"])).resolve()
    return default_runtime_dir(environ)


def _read_record(path: Path, problems: list[str]) -> dict[str, Any]:
    if not path.exists():
        return {}
    record = _read_settings_file(path, problems)
    if not isinstance(record.get("settings", {}), dict):
        problems.append(f"{path} is not a record bokeh-stack wrote: remove it and start the stack again")
        return {}
    return record


def _absolute_paths(layer: Mapping[str, Any], base: Path) -> dict[str, Any]:
    """The layer with its relative paths made absolute: a record is read from anywhere."""
    return {
        key: str((base / value).resolve()) if key in PATH_KEYS and isinstance(value, str) and value else value
        for key, value in layer.items()
    }


def _read_settings_file(path: Path, problems: list[str]) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        problems.append(f"cannot read settings file {path}: {e.strerror}")
        return {}
    except yaml.YAMLError as e:
        problems.append(f"settings file {path} is not valid YAML: {e}")
        return {}
    if data is None:
        return {}
    if not isinstance(data, dict):
        problems.append(f"settings file {path} must hold a mapping of settings, not {type(data).__name__}")
        return {}
    return data


def _environment_layer(environ: Mapping[str, str], schema: Mapping[str, Any], problems: list[str]) -> dict[str, Any]:
    layer: dict[str, Any] = {}
    for name, text in environ.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_SETTINGS_FILE:
            continue
        keys = name[len(ENV_PREFIX) :].lower().split(model.ENV_NESTING)
        try:
            # Empty (compose's ${NAME:-}): an empty string, or an empty list or mapping where the setting is one.
            value = yaml.safe_load(text) if text.strip() else _empty_like(schema, keys)
        except yaml.YAMLError:
            problems.append(f"{name}: cannot parse {text!r} as a YAML value")
            continue
        node = layer
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return layer


def _empty_like(schema: Mapping[str, Any], keys: list[str]) -> Any:
    node: Any = schema
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    return type(node)() if isinstance(node, (list, dict)) else ""


def _merge_layer(
    merged: dict[str, Any],
    schema: Mapping[str, Any],
    layer: dict[str, Any],
    source: str,
    problems: list[str],
    path_base: dict[str, Path],
    base: Path,
) -> None:
    _check_known_keys(layer, schema, source, problems, prefix="")
    _deep_merge(merged, layer)
    for key in PATH_KEYS:
        if key in layer:
            path_base[key] = base


def _check_known_keys(layer: Mapping, schema: Mapping, source: str, problems: list[str], prefix: str) -> None:
    for key, value in layer.items():
        dotted = f"{prefix}{key}"
        if key not in schema:
            hint = difflib.get_close_matches(str(key), [str(k) for k in schema], n=1)
            problems.append(
                f"unknown setting '{dotted}' in {source}" + (f" (did you mean '{prefix}{hint[0]}'?)" if hint else "")
            )
        elif key == "pools":
            _check_pool_keys(value, source, problems)
        elif key in ("access", "function_apps"):
            continue  # keyed by app: _check_access, _check_function_apps
        elif isinstance(schema[key], dict) and isinstance(value, dict):
            _check_known_keys(value, schema[key], source, problems, prefix=f"{dotted}.")


def _check_pool_keys(pools: Any, source: str, problems: list[str]) -> None:
    if not isinstance(pools, dict):
        return  # reported with the types
    for name, pool in pools.items():
        if isinstance(pool, dict):
            for key in pool:
                if key not in POOL_KEYS:
                    problems.append(
                        f"unknown setting 'pools.{name}.{key}' in {source} (a pool has {', '.join(POOL_KEYS)})"
                    )


def _deep_merge(into: dict[str, Any], layer: Mapping[str, Any]) -> None:
    for key, value in layer.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


def _build(raw: dict[str, Any], path_base: dict[str, Path], environ: Mapping[str, str]) -> Settings:
    try:
        given = model.Settings(**raw)
    except ValidationError as e:
        raise SettingsError(model_problems(e, raw)) from None
    problems: list[str] = []
    paths = {key: (path_base[key] / getattr(given, key)).resolve() for key in PATH_KEYS if getattr(given, key)}
    runtime_dir = paths.get("runtime_dir") or default_runtime_dir(environ)
    log_dir = paths.get("log_dir") or runtime_dir / "logs"
    secret_file = paths.get("secret_file") or runtime_dir / "secret"
    apps_dir = paths.get("apps_dir") or path_base["apps_dir"]

    check_host(given, problems)
    sources = check_apps(apps_dir, given.function_apps, given.role, problems)
    python_path = check_python_path(given.python_path, given.role, problems)
    apps = list(sources)
    pools = build_pools(given, apps, problems)
    access = check_access(given.access, given.auth.mode, apps, problems)
    check_app_names("session.resume_except", given.session.resume_except, apps, problems)
    tls_on = bool(given.tls.certificate)
    nginx_ports = {given.port: "nginx (port)"}
    if tls_on:
        nginx_ports.setdefault(given.tls.port, "nginx (tls.port)")
    if runs_nginx(given.role):
        if given.ops.port in nginx_ports:
            problems.append(f"ops.port and {nginx_ports[given.ops.port]} must differ, both are {given.ops.port}")
        nginx_ports.setdefault(given.ops.port, "nginx (ops.port)")
    check_port_clashes(nginx_ports, pools, problems)
    if problems:
        raise SettingsError(problems)

    public_port = given.tls.port if tls_on else given.port
    origins = given.public_origins or tuple(origin(name, public_port) for name in given.server_names if name != "*")
    return Settings(
        given=given,
        apps_dir=apps_dir,
        function_apps={app: source.function for app, source in sources.items() if source.function},
        python_path=python_path,
        runtime_dir=runtime_dir,
        log_dir=log_dir,
        secret_file=secret_file,
        public_origins=origins,
        worker_hosts=given.worker_hosts or (given.worker_address,),
        pools=tuple(pools),
        access=access,
        sources=sources,
    )


def default_runtime_dir(environ: Mapping[str, str]) -> Path:
    """The user's state directory (XDG Base Directory): where a stack runs unless runtime_dir says otherwise."""
    state_home = environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state_home) / "bokeh-stack"
