"""The one settings model of a bokeh-stack deployment.

Layers, each overriding the one before: defaults.yaml beside this file, a settings file (YAML, same keys),
BOKEH_STACK_* environment variables (nested keys joined by a double underscore, values parsed as YAML),
and command-line flags. Everything is validated before anything starts; every problem is reported at once.

It needs only the standard library and PyYAML: `bokeh-stack` starts fast and checks settings before anything else.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import importlib.util
import ipaddress
import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bokeh_stack.config.files import write_atomically
from bokeh_stack.config.topology import is_ip, local_address, url_host
from bokeh_stack.identity import SIGNIN_COOKIE

DEFAULTS_FILE = Path(__file__).with_name("defaults.yaml")
ENV_PREFIX = "BOKEH_STACK_"
ENV_SETTINGS_FILE = "BOKEH_STACK_SETTINGS"
DEFAULT_POOL = "default"
POOL_KEYS = {"apps": list, "workers": int, "base_port": int}
PATH_KEYS = ("apps_dir", "runtime_dir", "log_dir", "secret_file")
# What a host runs: nginx and the workers, nginx only, the workers only.
ROLES = ("all", "balancer", "worker")
AUTH_MODES = ("none", "password", "oidc")
# Paths where the stack serves something of its own; an app of that name would be shadowed.
RESERVED_APP_NAMES = {"static", "healthz"}

_HOST = re.compile(r"^([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*)$")
_ORIGIN = re.compile(r"^(?P<host>[^:\s/]+|\[[0-9A-Fa-f:.]+\])(:(?P<port>\d{1,5}))?$")
_APP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_FUNCTION = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
# What apps_dir may hold, by suffix (a directory has none): each is served at /NAME.
APP_FILE_SUFFIXES = (".py", ".ipynb")
_POOL_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_USER = re.compile(r"^[a-z_][a-z0-9_-]*[$]?$")
_PREFIX = re.compile(r"^(/[A-Za-z0-9._~-]+)*$")
# Characters that would need escaping in nginx or supervisord configs; refused in paths.
_UNSAFE_PATH_CHARS = set("\"'`\\$%{};\n\r\t")
_FRAME_ANCESTORS = re.compile(r"^[A-Za-z0-9'*:/._ -]+$")
# Numeric settings where 0 means "off"; every other number in a group must be positive.
ZERO_MEANS_OFF = {
    "nginx.page_rate_per_s", "nginx.ws_per_address", "nginx.ws_open_rate_per_s", "tls.hsts_max_age_s",
    "watchdog.timeout_s",
}  # fmt: skip
# What session.pass_cookies and session.pass_headers may name (they are rendered into the workers' arguments).
_COOKIE_NAME = re.compile(r"^[A-Za-z0-9_.!#$%&'*+^`|~-]{1,128}$")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9-]{1,128}$")


class SettingsError(ValueError):
    """Invalid settings; `problems` lists every one found."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid settings:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True)
class Pool:
    """Workers serving a set of apps: one supervisord program, one nginx upstream."""

    name: str
    apps: tuple[str, ...]
    workers: int
    base_port: int

    @property
    def ports(self) -> range:
        return range(self.base_port, self.base_port + self.workers)

    @property
    def program(self) -> str:
        """The supervisord program and nginx upstream name."""
        return f"bokeh_{self.name}"


@dataclass(frozen=True)
class AppSource:
    """Where an app's code is: a directory, a script or a notebook in apps_dir (`path`), or a function of an
    importable module, `package.module:function` (setting function_apps)."""

    name: str
    path: Path | None = None
    function: str = ""

    @property
    def kind(self) -> str:
        if self.function:
            return "function"
        return {".py": "script", ".ipynb": "notebook"}.get(self.path.suffix, "directory")

    @property
    def serves(self) -> str:
        """What a worker is given to serve it: the path, or the function's `module:function`."""
        return self.function or str(self.path)


@dataclass(frozen=True)
class Settings:
    """The validated settings. Every field but `pools` is the setting of the same name in defaults.yaml (its
    default and its documentation are there; a test holds the two to the same names), lists as tuples and paths
    resolved; `pools` holds the default pool and every named one."""

    apps_dir: Path
    function_apps: Mapping[str, str]
    python_path: tuple[Path, ...]
    runtime_dir: Path
    role: str
    user: str
    allow_root: bool
    listen_address: str
    port: int
    server_names: tuple[str, ...]
    public_origins: tuple[str, ...]
    prefix: str
    trusted_proxies: tuple[str, ...]
    auth: Mapping[str, Any]
    access: Mapping[str, Mapping[str, tuple[str, ...]]]
    worker_address: str
    worker_hosts: tuple[str, ...]
    unix_sockets: bool
    base_port: int
    workers: int
    pools: tuple[Pool, ...]
    session: Mapping[str, int]
    nginx: Mapping[str, int]
    stats_log_ms: int
    mem_log_ms: int
    log_dir: Path
    log_to_stdout: bool
    secret_file: Path
    frame_ancestors: str
    tls: Mapping[str, Any]
    watchdog: Mapping[str, int]
    ops: Mapping[str, Any]
    worker_fixes: bool
    worker_fix_mismatch: str
    # Not settings: every app's code, by name (apps_dir and function_apps) ...
    sources: Mapping[str, AppSource] = field(default_factory=dict)
    # ... and what these settings were made of, for write_record (the file, the environment, the flags).
    record: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def tls_on(self) -> bool:
        return bool(self.tls["certificate"])

    @property
    def public_port(self) -> int:
        """The port browsers load the apps from: HTTPS's when TLS is on."""
        return self.tls["port"] if self.tls_on else self.port

    @property
    def auth_on(self) -> bool:
        return self.auth["mode"] != "none"

    @property
    def users_file(self) -> Path:
        return Path(self.auth["users_file"]) if self.auth["users_file"] else self.runtime_dir / "users.json"

    @property
    def ops_server_names(self) -> tuple[str, ...]:
        """The Host names the ops listener answers to: setting ops.server_names (or localhost and the loopback and
        listening addresses), and always the address this host itself reaches it at (the ops process, status)."""
        names = list(self.ops["server_names"]) or ["localhost", "127.0.0.1", "::1", self.ops["address"]]
        names.append(local_address(self.ops["address"]))
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


def load_defaults() -> dict[str, Any]:
    return yaml.safe_load(DEFAULTS_FILE.read_text())


def discover_apps(apps_dir: Path) -> list[AppSource]:
    """The Bokeh apps in apps_dir, as `bokeh serve` takes them: subdirectories with a main.py or main.ipynb, and
    .py and .ipynb files; by name (two may share one: `a/` and `a.py`, reported by the check)."""
    if not apps_dir.is_dir():
        return []
    found = []
    for entry in sorted(apps_dir.iterdir()):
        if entry.name.startswith((".", "_")):
            continue
        if entry.is_dir() and ((entry / "main.py").is_file() or (entry / "main.ipynb").is_file()):
            found.append(AppSource(entry.name, entry))
        elif entry.is_file() and entry.suffix in APP_FILE_SUFFIXES:
            found.append(AppSource(entry.stem, entry))
    return found


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
    schema = load_defaults()
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
        settings = _build(merged, schema, path_base, environ)
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
        keys = name[len(ENV_PREFIX) :].lower().split("__")
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


def _build(
    raw: dict[str, Any], schema: Mapping[str, Any], path_base: dict[str, Path], environ: Mapping[str, str]
) -> Settings:
    problems: list[str] = []
    _check_types(raw, schema, problems, prefix="")
    if problems:
        raise SettingsError(problems)

    paths = {key: _path(raw[key], path_base[key], key, problems) for key in PATH_KEYS}
    runtime_dir = paths["runtime_dir"] if raw["runtime_dir"] else default_runtime_dir(environ)
    log_dir = paths["log_dir"] if raw["log_dir"] else runtime_dir / "logs"
    secret_file = paths["secret_file"] if raw["secret_file"] else runtime_dir / "secret"

    for key in ("port", "base_port"):
        _check_port(raw[key], key, problems)
    if raw["worker_fix_mismatch"] not in ("stop", "warn"):
        problems.append(f"worker_fix_mismatch must be stop or warn, got {raw['worker_fix_mismatch']!r}")
    if raw["role"] not in ROLES:
        problems.append(f"role must be one of {', '.join(ROLES)}, got {raw['role']!r}")
    if raw["user"] and not _USER.match(raw["user"]):
        problems.append(f"user must be a user name (or empty: the user who starts the stack), got {raw['user']!r}")
    if raw["workers"] < 1:
        problems.append(f"workers must be at least 1, got {raw['workers']}")
    for key in ("listen_address", "worker_address"):
        _check_address(raw[key], key, problems)
    if not raw["server_names"]:
        problems.append("server_names must name at least one host")
    for name in raw["server_names"]:
        if not _HOST.match(name) and not is_ip(name):
            problems.append(f"server_names: {name!r} is not a host name or address")
    for host in raw["worker_hosts"]:
        if not _HOST.match(host) and not is_ip(host):
            problems.append(f"worker_hosts: {host!r} is not a host name or address")
    for origin in raw["public_origins"]:
        match = _ORIGIN.match(origin)
        if not match or (match["port"] and not 0 < int(match["port"]) < 65536):
            problems.append(f"public_origins: {origin!r} is not host[:port]")
    if not _PREFIX.match(raw["prefix"]):
        problems.append(f"prefix must be empty or a path like /dashboards (no trailing slash), got {raw['prefix']!r}")
    for group in ("session", "nginx", "watchdog"):
        for key, value in raw[group].items():
            dotted = f"{group}.{key}"
            if (
                isinstance(value, int)
                and not isinstance(value, bool)
                and value < (0 if dotted in ZERO_MEANS_OFF else 1)
            ):
                wanted = "0 (off) or positive" if dotted in ZERO_MEANS_OFF else "positive"
                problems.append(f"{dotted} must be {wanted}, got {value}")
    for key, pattern, kind in (("pass_cookies", _COOKIE_NAME, "cookie"), ("pass_headers", _HEADER_NAME, "header")):
        for name in raw["session"][key]:
            if not pattern.match(name):
                problems.append(f"session.{key}: {name!r} is not a {kind} name")
    if SIGNIN_COOKIE in raw["session"]["pass_cookies"]:
        problems.append(f"session.pass_cookies: {SIGNIN_COOKIE} is the sign-in cookie, which no page may carry")
    if not _FRAME_ANCESTORS.match(raw["frame_ancestors"]):
        problems.append(
            f"frame_ancestors must be CSP sources like \"'self' https://example.com\", got {raw['frame_ancestors']!r}"
        )
    _check_tls(raw["tls"], raw["port"], problems)
    _check_ops(raw["ops"], problems)
    _check_networks(raw["trusted_proxies"], "trusted_proxies", problems)
    _check_auth(raw["auth"], problems)
    for key in ("stats_log_ms", "mem_log_ms"):
        if raw[key] < 0:
            problems.append(f"{key} must be 0 (off) or positive, got {raw[key]}")

    sources = _check_apps(paths["apps_dir"], raw["function_apps"], raw["role"], problems)
    python_path = _check_python_path(raw["python_path"], raw["role"], problems)
    apps = list(sources)
    pools = _build_pools(raw, apps, problems)
    access = _check_access(raw["access"], raw["auth"]["mode"], apps, problems)
    tls_on = bool(raw["tls"]["certificate"])
    nginx_ports = {raw["port"]: "nginx (port)"}
    if tls_on:
        nginx_ports.setdefault(raw["tls"]["port"], "nginx (tls.port)")
    ops_port = raw["ops"]["port"]
    if raw["role"] != "worker":
        if ops_port in nginx_ports:
            problems.append(f"ops.port and {nginx_ports[ops_port]} must differ, both are {ops_port}")
        nginx_ports.setdefault(ops_port, "nginx (ops.port)")
    _check_port_clashes(nginx_ports, pools, problems)
    if problems:
        raise SettingsError(problems)

    port = raw["port"]
    public_port = raw["tls"]["port"] if tls_on else port
    origins = raw["public_origins"] or [_origin(name, public_port) for name in raw["server_names"] if name != "*"]
    values = {key: tuple(raw[key]) if isinstance(raw[key], list) else raw[key] for key in schema}
    values["ops"] = {
        **raw["ops"],
        "allow": tuple(raw["ops"]["allow"]),
        "server_names": tuple(raw["ops"]["server_names"]),
    }
    values["auth"] = {**raw["auth"], "oidc": {**raw["auth"]["oidc"], "scopes": tuple(raw["auth"]["oidc"]["scopes"])}}
    values["access"] = access
    values["function_apps"] = {app: source.function for app, source in sources.items() if source.function}
    values.update(
        apps_dir=paths["apps_dir"],
        python_path=python_path,
        sources=sources,
        runtime_dir=runtime_dir,
        log_dir=log_dir,
        secret_file=secret_file,
        public_origins=tuple(origins),
        worker_hosts=tuple(raw["worker_hosts"]) or (raw["worker_address"],),
        pools=tuple(pools),
    )
    return Settings(**values)


def default_runtime_dir(environ: Mapping[str, str]) -> Path:
    """The user's state directory (XDG Base Directory): where a stack runs unless runtime_dir says otherwise."""
    state_home = environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state_home) / "bokeh-stack"


def _origin(host: str, port: int) -> str:
    # Bokeh reads an Origin without a port (https://host on 443 too) as host:80, and so does its allowlist.
    return host if port in (80, 443) else f"{host}:{port}"


def _check_tls(tls: Mapping[str, Any], port: int, problems: list[str]) -> None:
    files = {key: tls[key] for key in ("certificate", "key")}
    if any(files.values()) and not all(files.values()):
        problems.append("tls.certificate and tls.key go together: set both (HTTPS on) or neither (off)")
    for key, value in files.items():
        if not value:
            continue
        if not value.startswith("/") or set(value) & _UNSAFE_PATH_CHARS:
            problems.append(f"tls.{key} must be an absolute path without quotes or $, got {value!r}")
        elif not os.access(value, os.R_OK):
            problems.append(f"tls.{key}: {value} does not exist or is not readable")
    _check_port(tls["port"], "tls.port", problems)
    if all(files.values()) and tls["port"] == port:
        problems.append(f"tls.port and port must differ (port redirects to HTTPS), both are {port}")


def _check_ops(ops: Mapping[str, Any], problems: list[str]) -> None:
    _check_address(ops["address"], "ops.address", problems)
    _check_port(ops["port"], "ops.port", problems)
    _check_networks(ops["allow"], "ops.allow", problems)
    for name in ops["server_names"]:
        if not _HOST.match(name) and not is_ip(name.strip("[]")):
            problems.append(f"ops.server_names: {name!r} is not a host name or address")


def _check_networks(networks: list[str], key: str, problems: list[str]) -> None:
    for network in networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            problems.append(f"{key}: {network!r} is not an address or network (CIDR, e.g. 10.0.0.0/8)")


def _check_auth(auth: Mapping[str, Any], problems: list[str]) -> None:
    if auth["mode"] not in AUTH_MODES:
        problems.append(f"auth.mode must be one of {', '.join(AUTH_MODES)}, got {auth['mode']!r}")
    for key in ("session_hours", "failed_per_minute"):
        if auth[key] < 1:
            problems.append(f"auth.{key} must be positive, got {auth[key]}")
    oidc = auth["oidc"]
    for key, value in (
        ("auth.users_file", auth["users_file"]),
        ("auth.oidc.client_secret_file", oidc["client_secret_file"]),
    ):
        if value and (not value.startswith("/") or set(value) & _UNSAFE_PATH_CHARS):
            problems.append(f"{key} must be an absolute path without quotes or $, got {value!r}")
    if auth["mode"] != "oidc":
        return
    issuer = urllib.parse.urlsplit(oidc["issuer"])
    loopback = issuer.hostname in ("127.0.0.1", "::1", "localhost")
    if not (issuer.scheme == "https" or (issuer.scheme == "http" and loopback)) or not issuer.hostname:
        problems.append(f"auth.oidc.issuer must be the provider's https:// URL, got {oidc['issuer']!r}")
    if not oidc["client_id"]:
        problems.append("auth.oidc.client_id must be set: this stack's client id at the provider")
    secret_file = oidc["client_secret_file"]
    if not secret_file:
        problems.append("auth.oidc.client_secret_file must be set: the file holding the client secret")
    elif secret_file.startswith("/") and not os.access(secret_file, os.R_OK):
        problems.append(f"auth.oidc.client_secret_file: {secret_file} does not exist or is not readable")
    if "openid" not in oidc["scopes"]:
        problems.append(f"auth.oidc.scopes must include openid, got {oidc['scopes']!r}")


def _check_access(
    access: Mapping[str, Any], mode: str, apps: list[str], problems: list[str]
) -> dict[str, dict[str, tuple[str, ...]]]:
    if access and mode == "none":
        problems.append("access needs sign-in: set auth.mode to password or oidc")
    rules: dict[str, dict[str, tuple[str, ...]]] = {}
    for app, rule in access.items():
        if app not in apps:
            problems.append(f"access: no app {app!r} in apps_dir (apps: {', '.join(apps) or 'none'})")
            continue
        if not isinstance(rule, dict) or set(rule) - {"users", "groups"}:
            problems.append(f"access.{app} must be a mapping with users and/or groups, got {rule!r}")
            continue
        for key in ("users", "groups"):
            names = rule.get(key, [])
            if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
                problems.append(f"access.{app}.{key} must be a list of names, got {names!r}")
        rules[app] = {key: tuple(rule.get(key, []) or ()) for key in ("users", "groups")}
    return rules


def _type_name(kind: type) -> str:
    return {int: "a whole number", str: "a string", bool: "true or false", list: "a list", dict: "a mapping"}[kind]


def _check_types(raw: Mapping, schema: Mapping, problems: list[str], prefix: str) -> None:
    for key, default in schema.items():
        value, dotted = raw[key], f"{prefix}{key}"
        kind = type(default)
        # bool is an int in Python; a YAML `yes` must not pass for a worker count.
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            problems.append(f"{dotted} must be {_type_name(int)}, got {value!r}")
        elif kind is not int and not isinstance(value, kind):
            problems.append(f"{dotted} must be {_type_name(kind)}, got {value!r}")
        elif kind is list and not all(isinstance(item, str) for item in value):
            problems.append(f"{dotted} must be a list of strings, got {value!r}")
        elif kind is dict and key not in ("pools", "access", "function_apps"):
            _check_types(value, default, problems, prefix=f"{dotted}.")


def _path(value: str, base: Path, key: str, problems: list[str]) -> Path:
    bad = sorted(set(value) & _UNSAFE_PATH_CHARS)
    if bad:
        problems.append(f"{key}: {value!r} contains characters not allowed in a path here: {' '.join(map(repr, bad))}")
    return (base / value).resolve() if value else base


def _check_address(value: str, key: str, problems: list[str]) -> None:
    if not is_ip(value):
        problems.append(f"{key} must be an IP address, got {value!r}")


def _check_port(value: int, key: str, problems: list[str]) -> None:
    if not 0 < value < 65536:
        problems.append(f"{key} must be a port number from 1 to 65535, got {value}")


def _check_apps(
    apps_dir: Path, function_apps: Mapping[str, Any], role: str, problems: list[str]
) -> dict[str, AppSource]:
    """Every app by name, from apps_dir and function_apps, each name once and fit to be a URL path."""
    if not apps_dir.is_dir():
        problems.append(f"apps_dir {apps_dir} is not a directory (it may be empty when function_apps are set)")
        return {}
    found = discover_apps(apps_dir)
    for route, function in function_apps.items():
        name = str(route).removeprefix("/")
        if not isinstance(function, str) or not _FUNCTION.match(function):
            problems.append(f"function_apps.{route} must be 'package.module:function', got {function!r}")
        elif name:
            found.append(AppSource(name, function=function))
        if not name or "/" in name:
            problems.append(f"function_apps: route {route!r} must be one name, served at /NAME (/ is the index)")
    if not found:
        problems.append(
            f"apps_dir {apps_dir} holds no Bokeh app (a subdirectory with a main.py, or a .py or .ipynb file), "
            "and function_apps names none"
        )
    sources: dict[str, AppSource] = {}
    for source in found:
        if source.function:
            what = f"function app {source.name!r}"
        else:
            what = f"app {'directory ' if source.kind == 'directory' else ''}{source.path.name!r}"
        if not _APP_NAME.match(source.name):
            problems.append(f"{what} cannot be a URL path: use letters, digits, '-' and '_'")
        elif source.name in RESERVED_APP_NAMES:
            problems.append(f"{what} clashes with the stack's own /{source.name}/ path: rename it")
        elif source.name in sources:
            other = sources[source.name]
            first = f"function_apps.{other.name}" if other.function else other.path.name
            problems.append(f"{what} and {first} would both be /{source.name}: rename one")
        else:
            sources[source.name] = source
    notebooks = [s.path.name for s in sources.values() if s.kind == "notebook"]
    if notebooks and role != "balancer" and importlib.util.find_spec("nbconvert") is None:
        problems.append(f"notebook apps ({', '.join(notebooks)}) need nbconvert: pip install 'bokeh-stack[notebooks]'")
    return dict(sorted(sources.items()))


def _check_python_path(entries: list[str], role: str, problems: list[str]) -> tuple[Path, ...]:
    for entry in entries:
        if not entry.startswith("/") or set(entry) & _UNSAFE_PATH_CHARS:
            problems.append(f"python_path: {entry!r} must be an absolute path without quotes or $")
        elif role != "balancer" and not Path(entry).is_dir():
            problems.append(f"python_path: {entry} is not a directory")
    return tuple(Path(entry) for entry in entries)


def _build_pools(raw: Mapping[str, Any], apps: list[str], problems: list[str]) -> list[Pool]:
    assigned: dict[str, str] = {}
    named: list[tuple[str, list[str], int, int | None]] = []
    if not isinstance(raw["pools"], dict):
        problems.append(f"pools must be a mapping of pool name to {{apps, workers}}, got {raw['pools']!r}")
        return []
    for name, spec in raw["pools"].items():
        if not isinstance(spec, dict):
            problems.append(f"pools.{name} must be a mapping with apps and workers, got {spec!r}")
            continue
        if name == DEFAULT_POOL or not _POOL_NAME.match(str(name)):
            problems.append(f"pool name {name!r}: use lower-case letters, digits and '_', and not {DEFAULT_POOL!r}")
        pool_apps, workers, base_port = spec.get("apps"), spec.get("workers", 1), spec.get("base_port")
        if not isinstance(pool_apps, list) or not pool_apps or not all(isinstance(a, str) for a in pool_apps):
            problems.append(f"pools.{name}.apps must be a non-empty list of app names")
            continue
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            problems.append(f"pools.{name}.workers must be a whole number of at least 1, got {workers!r}")
            continue
        if base_port is not None:
            if isinstance(base_port, bool) or not isinstance(base_port, int):
                problems.append(f"pools.{name}.base_port must be a whole number, got {base_port!r}")
                continue
            _check_port(base_port, f"pools.{name}.base_port", problems)
        for app in pool_apps:
            if app not in apps:
                problems.append(f"pools.{name}.apps: no app {app!r} in apps_dir (apps: {', '.join(apps) or 'none'})")
            elif app in assigned:
                problems.append(f"app {app!r} is in two pools: {assigned[app]} and {name}")
            else:
                assigned[app] = name
        named.append((str(name), pool_apps, workers, base_port))

    rest = [app for app in apps if app not in assigned]
    specs = ([(DEFAULT_POOL, rest, raw["workers"], raw["base_port"])] if rest else []) + named
    pools: list[Pool] = []
    next_port = raw["base_port"]
    for name, pool_apps, workers, base_port in specs:
        start = next_port if base_port is None else base_port
        pools.append(Pool(name=name, apps=tuple(sorted(pool_apps)), workers=workers, base_port=start))
        next_port = max(next_port, start + workers)
    return pools


def _check_port_clashes(owner: dict[int, str], pools: list[Pool], problems: list[str]) -> None:
    for pool in pools:
        if pool.ports.stop - 1 > 65535:
            problems.append(f"pool {pool.name}: ports {pool.ports.start}-{pool.ports.stop - 1} run past 65535")
            continue
        for p in pool.ports:
            if p in owner:
                problems.append(f"port {p} is used twice: by {owner[p]} and by pool {pool.name}'s workers")
                break
            owner[p] = f"pool {pool.name}'s workers"
