"""The checks that need more than one value: settings that go together, files the host must have, who may open
which app; and the model's own problems (config/model.py) in the words of the settings a user writes."""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from bokeh_stack.config.values import KEY, runs_workers

if TYPE_CHECKING:
    from bokeh_stack.config import model

_TYPES = {
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "tuple_type": "a list",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


def model_problems(error: ValidationError, raw: Mapping[str, Any]) -> list[str]:
    """Each of the model's problems as one line naming its setting: `session.keep_alive_ms must be positive`."""
    problems: list[str] = []
    for e in error.errors(include_url=False):
        loc = [str(part) for part in e["loc"] if not isinstance(part, int)]
        key = ".".join(loc)
        if e["type"] == "value_error":
            lines = str(e["ctx"]["error"]).splitlines()
            problems += [line.replace(KEY, key) for line in lines]
        elif e["type"] in _TYPES and len(loc) < len(e["loc"]):  # an item of a list
            problems.append(f"{key} must be a list of strings, got {_value(raw, loc)!r}")
        elif e["type"] in _TYPES:
            problems.append(f"{key} must be {_TYPES[e['type']]}, got {e['input']!r}")
        elif e["type"] == "literal_error":
            choices = ", ".join(re.findall(r"'([^']*)'", e["ctx"]["expected"]))
            problems.append(f"{key} must be one of {choices}, got {e['input']!r}")
        elif e["type"] == "extra_forbidden":
            continue  # named, with where it came from and a suggestion, by the layer that holds it
        else:
            problems.append(f"{key}: {e['msg']}, got {e['input']!r}")
    return list(dict.fromkeys(problems))


def _value(raw: Mapping[str, Any], loc: list[str]) -> Any:
    node: Any = raw
    for part in loc:
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def check_host(s: model.Settings, problems: list[str]) -> None:
    """What goes together, and the files this host must be able to read."""
    tls = s.tls
    if bool(tls.certificate) != bool(tls.key):
        problems.append("tls.certificate and tls.key go together: set both (HTTPS on) or neither (off)")
    for key in ("certificate", "key"):
        value = getattr(tls, key)
        if value and not os.access(value, os.R_OK):
            problems.append(f"tls.{key}: {value} does not exist or is not readable")
    if tls.certificate and tls.key and tls.port == s.port:
        problems.append(f"tls.port and port must differ (port redirects to HTTPS), both are {s.port}")
    if s.redis.run and not runs_workers(s.role) and not s.session.redis_password_file:
        problems.append(
            f"redis.run on a host of role {s.role} (without the workers' secret) needs session.redis_password_file: "
            "the file holding the password Redis and the workers share"
        )
    if s.auth.mode != "oidc":
        return
    oidc = s.auth.oidc
    issuer = urllib.parse.urlsplit(oidc.issuer)
    loopback = issuer.hostname in ("127.0.0.1", "::1", "localhost")
    if not (issuer.scheme == "https" or (issuer.scheme == "http" and loopback)) or not issuer.hostname:
        problems.append(f"auth.oidc.issuer must be the provider's https:// URL, got {oidc.issuer!r}")
    if not oidc.client_id:
        problems.append("auth.oidc.client_id must be set: this stack's client id at the provider")
    if not oidc.client_secret_file:
        problems.append("auth.oidc.client_secret_file must be set: the file holding the client secret")
    elif not os.access(oidc.client_secret_file, os.R_OK):
        problems.append(f"auth.oidc.client_secret_file: {oidc.client_secret_file} does not exist or is not readable")
    if "openid" not in oidc.scopes:
        problems.append(f"auth.oidc.scopes must include openid, got {list(oidc.scopes)!r}")


def check_app_names(key: str, names: Iterable[str], apps: list[str], problems: list[str]) -> bool:
    """Whether every name is an app's (each that is not, a problem)."""
    unknown = [name for name in names if name not in apps]
    problems += [f"{key}: no app {name!r} in apps_dir (apps: {', '.join(apps) or 'none'})" for name in unknown]
    return not unknown


def check_access(
    access: Mapping[str, Any], mode: str, apps: list[str], problems: list[str]
) -> dict[str, dict[str, tuple[str, ...]]]:
    """setting access, by app: who may open it."""
    if access and mode == "none":
        problems.append("access needs sign-in: set auth.mode to password or oidc")
    rules: dict[str, dict[str, tuple[str, ...]]] = {}
    for app, rule in access.items():
        if not check_app_names("access", [app], apps, problems):
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


def origin(host: str, port: int) -> str:
    # Bokeh reads an Origin without a port (https://host on 443 too) as host:80, and so does its allowlist.
    return host if port in (80, 443) else f"{host}:{port}"
