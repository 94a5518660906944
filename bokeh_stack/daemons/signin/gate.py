"""The gate: what the sign-in process knows and decides, apart from its pages: the settings it was given, the
users file as it is now, who a cookie says is signed in, and which workers must close whose websockets."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
from pathlib import Path

import jinja2
from tornado.web import create_signed_value, decode_signed_value

from bokeh_stack.config.handoff import SigninConfig
from bokeh_stack.config.limits import SCRAPE_TIMEOUT_S
from bokeh_stack.config.topology import resolve_targets
from bokeh_stack.daemons.signin import users
from bokeh_stack.daemons.signin.keys import Identity, fingerprint, mac
from bokeh_stack.daemons.signin.oidc import Provider
from bokeh_stack.daemons.signin.rules import RevokedCookies, SigninLimits
from bokeh_stack.identity import SIGNIN_COOKIE, header_value

COOKIE = SIGNIN_COOKIE
# How often the users file is looked at for removed users and changed passwords or groups, and how often a worker
# that did not answer is asked again to close their websockets.
USERS_CHECK_S = 1.0
REVOKE_TRIES = 5
log = logging.getLogger("bokeh_stack.signin")


class Users:
    """The users file, read again whenever it changes (`bokeh-stack users` takes effect at once). `signed_out`
    collects the users removed, or whose password or groups changed, since it was last emptied."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int] | None = None
        self._users: dict[str, users.User] = {}
        self.signed_out: set[str] = set()

    def refresh(self) -> None:
        try:
            stat = self.path.stat()
            seen = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            seen = None
        if seen == self._seen:
            return
        try:
            now = users.read(self.path) if seen else {}
        except users.UsersError as e:
            log.error("%s: nobody can sign in until it is fixed", e)
            now = {}
        if self._seen is not None or self._users:
            self.signed_out |= {name for name, user in self._users.items() if now.get(name) != user}
        self._users, self._seen = now, seen

    def get(self, name: str) -> users.User | None:
        self.refresh()
        return self._users.get(name)


class Gate:
    """Everything the handlers share: the config, the cookie key, the users, the provider, the limits."""

    def __init__(self, config: SigninConfig, key: bytes) -> None:
        self.key = key
        self.limits = SigninLimits(config.failed_per_minute)
        self.reconfigure(config)

    def reconfigure(self, config: SigninConfig) -> None:
        """Take new settings (`bokeh-stack apply` sends SIGHUP): the attempts counted so far are kept."""
        self.config = config
        self.users = Users(Path(config.users_file))
        self.users.refresh()
        self.revoked = RevokedCookies(Path(config.revoked_file))
        self.provider = Provider(config.oidc) if config.mode == "oidc" else None
        self.limits.per_minute = config.failed_per_minute
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(config.templates), autoescape=True, undefined=jinja2.StrictUndefined
        )
        self.index_page = env.get_template("nginx/index.html.j2")
        self.signin_page = env.get_template("nginx/signin.html.j2")

    def cookie(self, identity: Identity, user: users.User | None = None) -> bytes:
        value = {"u": identity.name, "g": list(identity.groups), "i": secrets.token_urlsafe(16)}
        if user is not None:
            value["f"] = fingerprint(self.key, user)
        return create_signed_value(self.key, COOKIE, json.dumps(value))

    def identity(self, cookie: str | None) -> Identity | None:
        if not cookie:
            return None
        value = decode_signed_value(self.key, COOKIE, cookie, max_age_days=self.config.session_hours / 24)
        if value is None:
            return None  # forged, another key's, expired or not one of ours
        try:
            raw = json.loads(value)
            identity = Identity(str(raw["u"]), tuple(str(g) for g in raw["g"]), str(raw["i"]))
            stamp = str(raw.get("f", ""))
        except (ValueError, KeyError, TypeError):
            return None
        if self.revoked.revoked(identity.cookie_id):
            return None  # signed out
        if self.config.mode == "password":
            user = self.users.get(identity.name)  # removed, or its password or groups changed: signed out
            if user is None or not hmac.compare_digest(stamp, fingerprint(self.key, user)):
                return None
            return Identity(user.name, user.groups, identity.cookie_id)
        return identity

    def csrf_token(self, nonce: str) -> str:
        """What a form carries: an HMAC of its signed cookie's random value (a planted cookie has no match)."""
        return mac(self.key, "csrf", nonce)

    def logout_token(self, identity: Identity) -> str:
        """The sign-out button's token: bound to that user's own cookie."""
        return mac(self.key, "logout", identity.cookie_id)

    async def close_websockets(self, names: set[str]) -> None:
        """Ask every worker to close these users' websockets; a worker that does not answer is asked again."""
        body = json.dumps({"users": sorted(header_value(n) for n in names)}).encode()
        targets = self.config.targets
        for attempt in range(REVOKE_TRIES):
            resolved = await resolve_targets(targets)
            answers = await asyncio.gather(
                *(t.endpoint.request(self.config.revoke_path, SCRAPE_TIMEOUT_S, body) for t in resolved)
            )
            missed = [t for t, answer in zip(resolved, answers, strict=True) if answer is None]
            if not missed:
                log.info("signed out %s: their websockets closed on %d workers", sorted(names), len(resolved))
                return
            targets = missed
            await asyncio.sleep(USERS_CHECK_S * (attempt + 1))
        log.error("signed out %s, but %s did not close their websockets", sorted(names), [t.worker for t in targets])

    def watch_users(self) -> None:
        """Every USERS_CHECK_S: users removed, or whose password or groups changed, lose their open websockets."""
        self.users.refresh()
        if self.users.signed_out:
            names, self.users.signed_out = self.users.signed_out, set()
            asyncio.ensure_future(self.close_websockets(names))
