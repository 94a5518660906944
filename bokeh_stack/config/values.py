"""The kinds of value settings take, each with its check: a check's message names the setting as {key}, filled in
where the problem is reported (config/checks.py), so that every message reads as the user writes the setting."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal, get_args

from pydantic import AfterValidator, StrictInt, StrictStr

from bokeh_stack.config.topology import is_ip
from bokeh_stack.identity import SIGNIN_COOKIE

# A check's message names its setting as {key}: the dotted path, filled in where the error is reported.
KEY = "{key}"
HOST = re.compile(r"^([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*)$")
ORIGIN = re.compile(r"^(?P<host>[^:\s/]+|\[[0-9A-Fa-f:.]+\])(:(?P<port>\d{1,5}))?$")
USER = re.compile(r"^[a-z_][a-z0-9_-]*[$]?$")
PREFIX = re.compile(r"^(/[A-Za-z0-9._~-]+)*$")
# Characters that would need escaping in nginx or supervisord configs; refused in paths.
UNSAFE_PATH_CHARS = set("\"'`\\$%{};\n\r\t")
FRAME_ANCESTORS = re.compile(r"^[A-Za-z0-9'*:/._ -]+$")
COOKIE_NAME = re.compile(r"^[A-Za-z0-9_.!#$%&'*+^`|~-]{1,128}$")
HEADER_NAME = re.compile(r"^[A-Za-z0-9-]{1,128}$")
# No user or password in it: the stack derives Redis's password from its secret.
REDIS_URL = re.compile(r"^redis://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:\d{1,5})?(/\d{1,2})?$")


def _check(test, message: str):
    """A check of one value: `message` (with {key} and {value}) when `test(value)` fails."""

    def check(value):
        if not test(value):
            raise ValueError(message.format(key=KEY, value=value, r=repr(value)))
        return value

    return AfterValidator(check)


def _each(test, message: str):
    """A check of every item of a list; each bad one is its own problem (one per line)."""

    def check(values):
        bad = [message.format(key=KEY, r=repr(v)) for v in values if not test(v)]
        if bad:
            raise ValueError("\n".join(bad))
        return values

    return AfterValidator(check)


def _network(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


Positive = Annotated[StrictInt, _check(lambda v: v >= 1, "{key} must be positive, got {value}")]
ZeroOrPositive = Annotated[StrictInt, _check(lambda v: v >= 0, "{key} must be 0 (off) or positive, got {value}")]
Port = Annotated[StrictInt, _check(lambda v: 0 < v < 65536, "{key} must be a port number from 1 to 65535, got {value}")]
Address = Annotated[StrictStr, _check(is_ip, "{key} must be an IP address, got {r}")]
Names = tuple[StrictStr, ...]
Networks = Annotated[Names, _each(_network, "{key}: {r} is not an address or network (CIDR, e.g. 10.0.0.0/8)")]
AbsolutePath = Annotated[
    StrictStr,
    _check(
        lambda v: not v or (v.startswith("/") and not set(v) & UNSAFE_PATH_CHARS),
        "{key} must be an absolute path without quotes or $, got {r}",
    ),
]


def _not_the_signin_cookie(names: tuple[str, ...]) -> bool:
    return SIGNIN_COOKIE not in names


def _host_or_ip(name: str) -> bool:
    return bool(HOST.match(name)) or is_ip(name)


def _origin(origin: str) -> bool:
    match = ORIGIN.match(origin)
    return bool(match) and (not match["port"] or 0 < int(match["port"]) < 65536)


def _path_chars(value: str) -> str:
    bad = sorted(set(value) & UNSAFE_PATH_CHARS)
    if bad:
        raise ValueError(f"{KEY}: {value!r} contains characters not allowed in a path here: {' '.join(map(repr, bad))}")
    return value


SafePath = Annotated[StrictStr, AfterValidator(_path_chars)]
Prefix = Annotated[
    StrictStr, _check(PREFIX.match, "{key} must be empty or a path like /dashboards (no trailing slash), got {r}")
]
FrameAncestors = Annotated[
    StrictStr, _check(FRAME_ANCESTORS.match, "{key} must be CSP sources like \"'self' https://example.com\", got {r}")
]
FixMismatch = Annotated[StrictStr, _check(lambda v: v in ("stop", "warn"), "{key} must be stop or warn, got {r}")]
UserName = Annotated[
    StrictStr,
    _check(
        lambda v: not v or USER.match(v), "{key} must be a user name (or empty: the user who starts the stack), got {r}"
    ),
]
# What a host runs: nginx and the workers, nginx only, the workers only.
Role = Literal["all", "balancer", "worker"]
ROLES: tuple[str, ...] = get_args(Role)


def runs_nginx(role: str) -> bool:
    return role in ("all", "balancer")


def runs_workers(role: str) -> bool:
    return role in ("all", "worker")


HostNames = Annotated[Names, _each(_host_or_ip, "{key}: {r} is not a host name or address")]
CookieNames = Annotated[
    Names,
    _each(COOKIE_NAME.match, "{key}: {r} is not a cookie name"),
    _check(_not_the_signin_cookie, f"{{key}}: {SIGNIN_COOKIE} is the sign-in cookie, which no page may carry"),
]
HeaderNames = Annotated[Names, _each(HEADER_NAME.match, "{key}: {r} is not a header name")]
OpsServerNames = Annotated[
    Names, _each(lambda n: bool(HOST.match(n)) or is_ip(n.strip("[]")), "{key}: {r} is not a host name or address")
]
ServerNames = Annotated[HostNames, _check(bool, "{key} must name at least one host")]
Origins = Annotated[Names, _each(_origin, "{key}: {r} is not host[:port]")]
Workers = Annotated[StrictInt, _check(lambda v: v >= 1, "{key} must be at least 1, got {value}")]
AppNames = Annotated[Names, _check(bool, "{key} must be a non-empty list of app names")]
PoolWorkers = Annotated[StrictInt, _check(lambda v: v >= 1, "{key} must be a whole number of at least 1, got {value}")]
SessionStore = Annotated[
    StrictStr,
    _check(
        lambda v: v in ("", "off") or REDIS_URL.match(v),
        "{key} must be empty (a directory under runtime_dir), off, or redis://HOST[:PORT][/DB] (no password: it "
        "comes from the stack's secret), got {r}",
    ),
]
