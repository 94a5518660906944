"""What the sign-in process remembers and refuses, apart from tornado: sign-in attempts per client address and per
account, cookies signed out before they expire, and where a browser may be sent after it
signs in. Standard library only, so that the fast tests exercise every rule."""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
import urllib.parse
from collections import OrderedDict, deque
from pathlib import Path

# Keys (addresses, account names) whose attempts are remembered at once; the oldest is forgotten first.
TRACKED_KEYS = 10000
# Per account: this many failed attempts in ACCOUNT_WINDOW_S are free; after that each attempt waits twice as long
# as the one before (1, 2, 4, ... s after the last failure), at most ACCOUNT_MAX_DELAY_S. A delay, not a lockout:
# the account's owner waits at most that long, whatever an attacker does.
ACCOUNT_FREE_FAILURES = 5
ACCOUNT_WINDOW_S = 900
ACCOUNT_MAX_DELAY_S = 300
ACCOUNT_KEY_CHARS = 64
# A `next` longer than this is not kept (a redirect carrying it would not fit nginx's buffers).
MAX_NEXT_CHARS = 2000
# What a path we send a browser back to may hold, percent-escapes included: no control characters, no white
# space, no backslash, no quotes or angle brackets (RFC 3986 path and query characters).
_PATH_CHARS = re.compile(r"^/[A-Za-z0-9\-._~!$&'()*+,;=:@/%?]*$")


def safe_next(prefix: str, target: str | None) -> str:
    """Where to go after signing in: a path of this stack only (under `prefix`), else the stack's home. Refused: a
    scheme or host (`//evil`, `/\\evil`, `https://...`), control characters and white space (`/%09/evil` is read by
    browsers as `//evil`), backslashes, also percent-encoded, and anything outside the prefix."""
    home = f"{prefix}/"
    if not target or len(target) > MAX_NEXT_CHARS or not _PATH_CHARS.match(target):
        return home
    path = urllib.parse.urlsplit(target).path
    decoded, decoded_path = target, path
    for _ in range(3):  # an escape of an escape (%252F) is checked as what it stands for, too
        decoded, decoded_path = urllib.parse.unquote(decoded), urllib.parse.unquote(decoded_path)
        if any(ord(c) < 0x20 or c in "\\\x7f" for c in decoded) or any(c.isspace() for c in decoded_path):
            return home
    if target.startswith("//") or decoded.startswith("//") or not (path == home or path.startswith(home)):
        return home
    if "/../" in f"{urllib.parse.unquote(path)}/" or "/./" in f"{urllib.parse.unquote(path)}/":
        return home
    return target


class Attempts:
    """Sign-in attempts by key in the last `window_s`, in bounded memory. An attempt is recorded before its
    password is checked (so that attempts sent at once all count) and forgiven once it proves right."""

    def __init__(self, window_s: float, kept_per_key: int) -> None:
        self.window_s = window_s
        self.kept_per_key = kept_per_key
        self._attempts: OrderedDict[str, deque[float]] = OrderedDict()

    def recent(self, key: str, now: float) -> deque[float]:
        attempts = self._attempts.get(key) or deque(maxlen=self.kept_per_key)
        while attempts and attempts[0] <= now - self.window_s:
            attempts.popleft()
        return attempts

    def record(self, key: str, now: float) -> None:
        attempts = self.recent(key, now)
        attempts.append(now)
        self._attempts.pop(key, None)
        self._attempts[key] = attempts
        while len(self._attempts) > TRACKED_KEYS:
            self._attempts.popitem(last=False)

    def forgive(self, key: str, at: float) -> None:
        attempts = self._attempts.get(key)
        if attempts is not None and at in attempts:
            attempts.remove(at)

    def clear(self, key: str) -> None:
        self._attempts.pop(key, None)


class SigninLimits:
    """Failed sign-ins per client address (a fixed number a minute) and per account (a growing delay)."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self.addresses = Attempts(60, 64)
        self.accounts = Attempts(ACCOUNT_WINDOW_S, 64)

    @staticmethod
    def account(name: str) -> str:
        return name[:ACCOUNT_KEY_CHARS]

    def retry_after(self, address: str, name: str, now: float) -> tuple[int, str]:
        """0 and "" if this attempt may be checked now, else the seconds to wait and what is limited."""
        by_address = self.addresses.recent(address, now)
        if len(by_address) >= self.per_minute:
            return int(by_address[-self.per_minute] + 60 - now) + 1, "address"
        by_account = self.accounts.recent(self.account(name), now)
        if len(by_account) >= ACCOUNT_FREE_FAILURES:
            delay = min(2 ** (len(by_account) - ACCOUNT_FREE_FAILURES), ACCOUNT_MAX_DELAY_S)
            wait = by_account[-1] + delay - now
            if wait > 0:
                return int(wait) + 1, "account"
        return 0, ""

    def attempt(self, address: str, name: str, now: float) -> None:
        self.addresses.record(address, now)
        self.accounts.record(self.account(name), now)

    def succeeded(self, address: str, name: str, at: float) -> None:
        self.addresses.forgive(address, at)
        self.accounts.clear(self.account(name))


class RevokedCookies:
    """Sign-in cookies signed out before they expire, by id, in a file beside the users file that every balancer
    sharing that file reads (written in place under a lock: its directory need not be writable)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int] | None = None
        self._until: dict[str, float] = {}

    def _read(self) -> None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._seen, self._until = None, {}
            return
        seen = (stat.st_mtime_ns, stat.st_size)
        if seen == self._seen:
            return
        with open(self.path) as f:
            fcntl.flock(f, fcntl.LOCK_SH)
            text = f.read()
        try:
            until = json.loads(text or "{}")
            self._until = {str(k): float(v) for k, v in until.items()}
        except (ValueError, TypeError, AttributeError):
            return  # keep what was read before
        self._seen = seen

    def revoked(self, cookie_id: str) -> bool:
        self._read()
        return cookie_id in self._until

    def revoke(self, cookie_id: str, until: float) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        with os.fdopen(fd, "r+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                kept = {k: float(v) for k, v in json.loads(f.read() or "{}").items()}
            except (ValueError, TypeError, AttributeError):
                kept = {}
            now = time.time()
            kept = {k: v for k, v in kept.items() if v > now}
            kept[cookie_id] = until
            f.seek(0)
            f.truncate()
            f.write(json.dumps(kept))
        self._seen = None
