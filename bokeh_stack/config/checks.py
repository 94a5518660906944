"""The checks of single settings and groups of them: a clear message for each bad value, collected into
`problems` (a settings error names every problem at once)."""

from __future__ import annotations

import ipaddress
import os
import re
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bokeh_stack.config.topology import is_ip
from bokeh_stack.identity import SIGNIN_COOKIE

# What a host runs: nginx and the workers, nginx only, the workers only.
ROLES = ("all", "balancer", "worker")
AUTH_MODES = ("none", "password", "oidc")
HOST = re.compile(r"^([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*)$")
ORIGIN = re.compile(r"^(?P<host>[^:\s/]+|\[[0-9A-Fa-f:.]+\])(:(?P<port>\d{1,5}))?$")
USER = re.compile(r"^[a-z_][a-z0-9_-]*[$]?$")
PREFIX = re.compile(r"^(/[A-Za-z0-9._~-]+)*$")
# Characters that would need escaping in nginx or supervisord configs; refused in paths.
UNSAFE_PATH_CHARS = set("\"'`\\$%{};\n\r\t")
FRAME_ANCESTORS = re.compile(r"^[A-Za-z0-9'*:/._ -]+$")
# Numeric settings where 0 means "off"; every other number in a group must be positive.
ZERO_MEANS_OFF = {
    "nginx.page_rate_per_s", "nginx.ws_per_address", "nginx.ws_open_rate_per_s", "tls.hsts_max_age_s",
    "watchdog.timeout_s",
}  # fmt: skip
# What session.pass_cookies and session.pass_headers may name (they are rendered into the workers' arguments).
COOKIE_NAME = re.compile(r"^[A-Za-z0-9_.!#$%&'*+^`|~-]{1,128}$")
HEADER_NAME = re.compile(r"^[A-Za-z0-9-]{1,128}$")


def check_tls(tls: Mapping[str, Any], port: int, problems: list[str]) -> None:
    files = {key: tls[key] for key in ("certificate", "key")}
    if any(files.values()) and not all(files.values()):
        problems.append("tls.certificate and tls.key go together: set both (HTTPS on) or neither (off)")
    for key, value in files.items():
        if not value:
            continue
        if not value.startswith("/") or set(value) & UNSAFE_PATH_CHARS:
            problems.append(f"tls.{key} must be an absolute path without quotes or $, got {value!r}")
        elif not os.access(value, os.R_OK):
            problems.append(f"tls.{key}: {value} does not exist or is not readable")
    check_port(tls["port"], "tls.port", problems)
    if all(files.values()) and tls["port"] == port:
        problems.append(f"tls.port and port must differ (port redirects to HTTPS), both are {port}")


def check_ops(ops: Mapping[str, Any], problems: list[str]) -> None:
    check_address(ops["address"], "ops.address", problems)
    check_port(ops["port"], "ops.port", problems)
    check_networks(ops["allow"], "ops.allow", problems)
    for name in ops["server_names"]:
        if not HOST.match(name) and not is_ip(name.strip("[]")):
            problems.append(f"ops.server_names: {name!r} is not a host name or address")


def check_networks(networks: list[str], key: str, problems: list[str]) -> None:
    for network in networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            problems.append(f"{key}: {network!r} is not an address or network (CIDR, e.g. 10.0.0.0/8)")


def check_auth(auth: Mapping[str, Any], problems: list[str]) -> None:
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
        if value and (not value.startswith("/") or set(value) & UNSAFE_PATH_CHARS):
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


def check_access(
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


def type_name(kind: type) -> str:
    return {int: "a whole number", str: "a string", bool: "true or false", list: "a list", dict: "a mapping"}[kind]


def check_types(raw: Mapping, schema: Mapping, problems: list[str], prefix: str) -> None:
    for key, default in schema.items():
        value, dotted = raw[key], f"{prefix}{key}"
        kind = type(default)
        # bool is an int in Python; a YAML `yes` must not pass for a worker count.
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            problems.append(f"{dotted} must be {type_name(int)}, got {value!r}")
        elif kind is not int and not isinstance(value, kind):
            problems.append(f"{dotted} must be {type_name(kind)}, got {value!r}")
        elif kind is list and not all(isinstance(item, str) for item in value):
            problems.append(f"{dotted} must be a list of strings, got {value!r}")
        elif kind is dict and key not in ("pools", "access", "function_apps"):
            check_types(value, default, problems, prefix=f"{dotted}.")


def path(value: str, base: Path, key: str, problems: list[str]) -> Path:
    bad = sorted(set(value) & UNSAFE_PATH_CHARS)
    if bad:
        problems.append(f"{key}: {value!r} contains characters not allowed in a path here: {' '.join(map(repr, bad))}")
    return (base / value).resolve() if value else base


def check_address(value: str, key: str, problems: list[str]) -> None:
    if not is_ip(value):
        problems.append(f"{key} must be an IP address, got {value!r}")


def check_port(value: int, key: str, problems: list[str]) -> None:
    if not 0 < value < 65536:
        problems.append(f"{key} must be a port number from 1 to 65535, got {value}")


def origin(host: str, port: int) -> str:
    # Bokeh reads an Origin without a port (https://host on 443 too) as host:80, and so does its allowlist.
    return host if port in (80, 443) else f"{host}:{port}"


def check_values(raw: Mapping[str, Any], problems: list[str]) -> None:
    """Each setting's value on its own (the types are checked already), and the groups'."""
    for key in ("port", "base_port"):
        check_port(raw[key], key, problems)
    if raw["worker_fix_mismatch"] not in ("stop", "warn"):
        problems.append(f"worker_fix_mismatch must be stop or warn, got {raw['worker_fix_mismatch']!r}")
    if raw["role"] not in ROLES:
        problems.append(f"role must be one of {', '.join(ROLES)}, got {raw['role']!r}")
    if raw["user"] and not USER.match(raw["user"]):
        problems.append(f"user must be a user name (or empty: the user who starts the stack), got {raw['user']!r}")
    if raw["workers"] < 1:
        problems.append(f"workers must be at least 1, got {raw['workers']}")
    for key in ("listen_address", "worker_address"):
        check_address(raw[key], key, problems)
    if not raw["server_names"]:
        problems.append("server_names must name at least one host")
    for name in raw["server_names"]:
        if not HOST.match(name) and not is_ip(name):
            problems.append(f"server_names: {name!r} is not a host name or address")
    for host in raw["worker_hosts"]:
        if not HOST.match(host) and not is_ip(host):
            problems.append(f"worker_hosts: {host!r} is not a host name or address")
    for origin in raw["public_origins"]:
        match = ORIGIN.match(origin)
        if not match or (match["port"] and not 0 < int(match["port"]) < 65536):
            problems.append(f"public_origins: {origin!r} is not host[:port]")
    if not PREFIX.match(raw["prefix"]):
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
    for key, pattern, kind in (("pass_cookies", COOKIE_NAME, "cookie"), ("pass_headers", HEADER_NAME, "header")):
        for name in raw["session"][key]:
            if not pattern.match(name):
                problems.append(f"session.{key}: {name!r} is not a {kind} name")
    if SIGNIN_COOKIE in raw["session"]["pass_cookies"]:
        problems.append(f"session.pass_cookies: {SIGNIN_COOKIE} is the sign-in cookie, which no page may carry")
    if not FRAME_ANCESTORS.match(raw["frame_ancestors"]):
        problems.append(
            f"frame_ancestors must be CSP sources like \"'self' https://example.com\", got {raw['frame_ancestors']!r}"
        )
    check_tls(raw["tls"], raw["port"], problems)
    check_ops(raw["ops"], problems)
    check_networks(raw["trusted_proxies"], "trusted_proxies", problems)
    check_auth(raw["auth"], problems)
    for key in ("stats_log_ms", "mem_log_ms"):
        if raw[key] < 0:
            problems.append(f"{key} must be 0 (off) or positive, got {raw[key]}")
