"""The users file of sign-in mode password (settings auth.users_file): each user's Argon2id password hash and
groups, written by `bokeh-stack users add|remove`, read by the sign-in process (bokeh_stack/daemons/signin/) whenever
it changes. Never a password in plain text; the file is 0600, its owner the user the sign-in process runs as."""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from bokeh_stack.config.files import write_atomically

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
_hasher = PasswordHasher()


@functools.cache
def _nobody_hash() -> str:
    """Checked against when the name is unknown, so that a wrong name takes as long as a wrong password. Made on
    first use: an Argon2 hash takes ~0.1 s, which every bokeh-stack command would otherwise pay at import."""
    return _hasher.hash("no user has this password")


class UsersError(ValueError):
    pass


@dataclass(frozen=True)
class User:
    name: str
    password_hash: str
    groups: tuple[str, ...] = ()


def read(path: Path) -> dict[str, User]:
    """Every user in the file; none if there is no file yet."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise UsersError(f"cannot read the users file {path}: {e}") from None
    try:
        return {name: User(name, entry["hash"], tuple(entry.get("groups", ()))) for name, entry in raw["users"].items()}
    except (KeyError, TypeError, AttributeError):
        raise UsersError(f"the users file {path} is not one bokeh-stack wrote ({{'users': {{NAME: ...}}}})") from None


def write(path: Path, users: dict[str, User]) -> None:
    """Replace the file in one step, mode 0600 from its first byte."""
    text = json.dumps(
        {"users": {u.name: {"hash": u.password_hash, "groups": list(u.groups)} for u in users.values()}}, indent=2
    )
    write_atomically(path, text + "\n", mode=0o600)


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise UsersError(
            f"a user name is 1 to 64 letters, digits and _.@- (starting with a letter or digit), got {name!r}"
        )
    return name


def check_groups(groups: list[str]) -> tuple[str, ...]:
    for group in groups:
        if not NAME.match(group):
            raise UsersError(f"a group name is 1 to 64 letters, digits and _.@-, got {group!r}")
    return tuple(dict.fromkeys(groups))


def make(name: str, password: str, groups: list[str]) -> User:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise UsersError(f"a password has {MIN_PASSWORD} to {MAX_PASSWORD} characters (got {len(password)})")
    return User(check_name(name), _hasher.hash(password), check_groups(groups))


def verify(user: User | None, password: str) -> bool:
    """Whether `password` is the user's; as slow for an unknown user (None) as for a wrong password."""
    if len(password) > MAX_PASSWORD:
        return False
    try:
        return _hasher.verify(user.password_hash if user else _nobody_hash(), password) and user is not None
    except (VerificationError, InvalidHashError):
        return False
