"""The secret that signs Bokeh session ids: one per deployment, shared by all its workers, generated on the
host on first run and never committed."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import time
from pathlib import Path

from bokeh_stack.config.files import write_atomically

ENV_VAR = "BOKEH_SECRET_KEY"
# Bokeh wants at least 32 bytes; the characters are kept to those safe inside supervisord's environment line.
_VALID = re.compile(r"^[A-Za-z0-9_+/=.-]{32,}$")


class SecretError(RuntimeError):
    pass


def ensure_secret(path: Path, environ: dict[str, str] | None = None) -> str:
    """BOKEH_SECRET_KEY from the environment if set, else the key in `path`, created (mode 0600) if missing."""
    environ = os.environ if environ is None else environ
    key = environ.get(ENV_VAR)
    if key:
        return _checked(key, f"${ENV_VAR}")
    if path.exists():
        return _checked(_written_by_the_other(path), str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    # O_EXCL: two first runs at once must not each write their own key.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _checked(_written_by_the_other(path), str(path))
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key


def _written_by_the_other(path: Path, timeout_s: float = 5.0) -> str:
    """The key in the file; if it is empty, another first start may have just created it: wait for its key."""
    deadline = time.monotonic() + timeout_s
    while not (text := path.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return text


def _checked(key: str, source: str) -> str:
    if not _VALID.match(key):
        raise SecretError(
            f"the secret key in {source} must be at least 32 characters of letters, digits and _+/=.- "
            f"(generate one with: python3 -c 'import secrets; print(secrets.token_urlsafe(48))')"
        )
    return key


def write_secret(path: Path, key: str, dry_run: bool = False) -> bool:
    """Make `path` hold `key` (given by a provisioner: several worker hosts share one), mode 0600; False if it
    already did."""
    key = _checked(key, "the given secret")
    if path.exists() and path.read_text().strip() == key and path.stat().st_mode & 0o777 == 0o600:
        return False
    if not dry_run:
        write_atomically(path, key + "\n", mode=0o600)
    return True


def derived(secret: str, purpose: str) -> str:
    """A key for one purpose (e.g. Redis's password), made from the deployment's secret: whoever holds the secret
    can make it, and it tells nothing of the secret."""
    return hmac.new(secret.encode(), f"bokeh-stack {purpose}".encode(), hashlib.sha256).hexdigest()


def redis_password(secret: str, password_file: str = "") -> str:
    """The password the workers give Redis (settings session.redis_password_file): the file's, if one is set (a
    secret Redis mounts too), else derived from the deployment's secret."""
    if not password_file:
        if not secret:  # a password derived from nothing would be the same everywhere
            raise SecretError("no Redis password: neither session.redis_password_file nor the workers' secret")
        return derived(secret, "redis")
    try:
        return Path(password_file).read_text().strip()
    except OSError as e:
        raise SecretError(f"cannot read Redis's password (session.redis_password_file): {e}") from None
