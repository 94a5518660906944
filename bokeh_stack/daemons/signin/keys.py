"""The sign-in key and what it signs: who a cookie says is signed in, the fingerprint that ties a cookie to a
user's password and groups, and the tokens of the forms."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import NamedTuple

from bokeh_stack.daemons.signin import users


class Identity(NamedTuple):
    name: str
    groups: tuple[str, ...]
    cookie_id: str = ""


def read_key(path: Path) -> bytes:
    """The sign-in key (made at provision time by render: secret.ensure_secret)."""
    key = path.read_text().strip()
    if len(key) < 32:
        raise ValueError(f"the sign-in key in {path} is shorter than 32 characters")
    return key.encode()


def mac(key: bytes, *parts: str) -> str:
    return hmac.new(key, "\0".join(parts).encode(), hashlib.sha256).hexdigest()[:32]


def fingerprint(key: bytes, user: users.User) -> str:
    """What a cookie of mode password holds of its user: changes with the password (a new hash, salted anew) and
    the groups, so that either change signs that user out everywhere."""
    return mac(key, "user", user.name, user.password_hash, *user.groups)


def may_open(access: dict[str, dict[str, list[str]]], identity: Identity, app: str) -> bool:
    rule = access.get(app)
    if rule is None:
        return True
    return identity.name in rule["users"] or bool(set(identity.groups) & set(rule["groups"]))
