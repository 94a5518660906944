"""The sign-in process: `python -m bokeh_stack.signin SIGNIN_FILE`, a small tornado server on a unix socket that
nginx alone reaches (settings auth.mode password or oidc). nginx asks it, by `auth_request`, about every index,
app page, autoload.js and websocket; it also serves the pages a person sees:

    <prefix>/                the index, listing only the apps this user may open
    <prefix>/login           the sign-in form (password) or the way to the OpenID Connect provider (oidc)
    <prefix>/login/callback  where the provider sends the browser back (oidc)
    <prefix>/logout          signs out

The signed-in state is one signed cookie (COOKIE: the user's name and groups, HMAC-SHA256 with a key derived
from the stack's secret, so that every balancer and restart accepts it), HttpOnly, SameSite=Lax, Secure under
https. SIGNIN_FILE (signin.json, rendered from the settings) says the rest.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
import signal
import sys
import time
import urllib.parse
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import jinja2
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.netutil import bind_unix_socket
from tornado.web import Application, HTTPError, RequestHandler, create_signed_value, decode_signed_value

from . import secret, users
from .identity import SIGNIN_COOKIE, USER_HEADER, header_value

PROGRAM = "bokeh_stack_signin"
COOKIE = SIGNIN_COOKIE
# The OpenID Connect flow in progress (state, nonce, PKCE verifier), for the callback alone.
FLOW_COOKIE = "bokeh_stack_oidc"
FLOW_MAX_AGE_S = 600
CSRF_COOKIE = "bokeh_stack_csrf"
# nginx's own questions: /_check/APP (may this request open APP; no APP: any page), and the pages it shows
# instead of a refused one.
CHECK_PATH = "/_check"
REQUIRED_PATH = "/_required"
FORBIDDEN_PATH = "/_forbidden"
# Addresses whose failed sign-ins are remembered at once (the oldest is forgotten first).
TRACKED_ADDRESSES = 10000
LOGGED_NAME_CHARS = 64
log = logging.getLogger("bokeh_stack.signin")


@dataclass(frozen=True)
class SigninConfig:
    """signin.json: who may come in, and what the index shows."""

    socket: str
    mode: str
    prefix: str
    session_hours: int
    failed_per_minute: int
    users_file: str
    oidc: dict[str, Any]
    access: dict[str, dict[str, list[str]]]
    apps: list[dict[str, Any]]
    versions: dict[str, str]
    templates: str

    @classmethod
    def read(cls, path: Path) -> SigninConfig:
        return cls(**json.loads(Path(path).read_text()))


class Identity(NamedTuple):
    name: str
    groups: tuple[str, ...]


def cookie_key(stack_secret: str) -> bytes:
    """The sign-in cookie's key: derived from the stack's secret, so it is the same on every balancer, and is not
    the key that signs Bokeh's session ids."""
    return hmac.new(stack_secret.encode(), b"bokeh-stack sign-in cookie", hashlib.sha256).hexdigest().encode()


def may_open(access: dict[str, dict[str, list[str]]], identity: Identity, app: str) -> bool:
    rule = access.get(app)
    if rule is None:
        return True
    return identity.name in rule["users"] or bool(set(identity.groups) & set(rule["groups"]))


class FailedSignins:
    """Failed sign-ins per client address in the last minute, in bounded memory."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, address: str, now: float) -> int:
        """0 if this address may try again now, else the seconds until it may."""
        failures = self._failures.get(address)
        while failures and failures[0] <= now - 60:
            failures.popleft()
        if not failures or len(failures) < self.per_minute:
            return 0
        return int(failures[0] + 60 - now) + 1

    def record(self, address: str, now: float) -> None:
        failures = self._failures.pop(address, None) or deque(maxlen=self.per_minute)
        failures.append(now)
        self._failures[address] = failures
        while len(self._failures) > TRACKED_ADDRESSES:
            self._failures.popitem(last=False)


class Users:
    """The users file, read again whenever it changes (`bokeh-stack users` takes effect at once)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int] | None = None
        self._users: dict[str, users.User] = {}

    def get(self, name: str) -> users.User | None:
        try:
            stat = self.path.stat()
            seen = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            seen = None
        if seen != self._seen:
            try:
                self._users = users.read(self.path) if seen else {}
            except users.UsersError as e:
                log.error("%s: nobody can sign in until it is fixed", e)
                self._users = {}
            self._seen = seen
        return self._users.get(name)


class Provider:
    """The OpenID Connect provider: its metadata and keys, read when first needed (and again if it failed)."""

    def __init__(self, oidc: dict[str, Any]) -> None:
        self.issuer = oidc["issuer"].rstrip("/")
        self.client_id = oidc["client_id"]
        self.client_secret = Path(oidc["client_secret_file"]).read_text().strip()
        self.scopes = " ".join(oidc["scopes"])
        self.username_claim = oidc["username_claim"]
        self.groups_claim = oidc["groups_claim"]
        self._metadata: dict[str, Any] | None = None

    async def metadata(self) -> dict[str, Any]:
        if self._metadata is None:
            metadata = await _get_json(f"{self.issuer}/.well-known/openid-configuration")
            if str(metadata.get("issuer", "")).rstrip("/") != self.issuer:
                raise ValueError(f"the provider at {self.issuer} calls itself {metadata.get('issuer')!r}")
            self._metadata = metadata
        return self._metadata

    def authorization_url(self, metadata: dict[str, Any], redirect_uri: str, flow: dict[str, str]) -> str:
        from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
        from authlib.oauth2.rfc7636 import create_s256_code_challenge

        return prepare_grant_uri(
            metadata["authorization_endpoint"], self.client_id, "code", redirect_uri=redirect_uri,
            scope=self.scopes, state=flow["state"], nonce=flow["nonce"],
            code_challenge=create_s256_code_challenge(flow["verifier"]), code_challenge_method="S256",
        )  # fmt: skip

    async def identity(self, code: str, redirect_uri: str, flow: dict[str, str]) -> Identity:
        """Exchange the code (with the PKCE verifier) for an ID token, check it, and read the user from it."""
        from joserfc import jwt
        from joserfc.jwk import KeySet

        metadata = await self.metadata()
        basic = base64.b64encode(
            f"{urllib.parse.quote(self.client_id)}:{urllib.parse.quote(self.client_secret)}".encode()
        ).decode()
        tokens = await _get_json(
            metadata["token_endpoint"],
            method="POST",
            headers={"Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded"},
            body=urllib.parse.urlencode(
                {
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": redirect_uri,
                    "code_verifier": flow["verifier"],
                }
            ),  # fmt: skip
        )
        keys = KeySet.import_key_set(await _get_json(metadata["jwks_uri"]))
        token = jwt.decode(tokens["id_token"], keys)
        jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": metadata["issuer"]},
            aud={"essential": True, "value": self.client_id},
            exp={"essential": True},
            nonce={"essential": True, "value": flow["nonce"]},
        ).validate(token.claims)
        claims = token.claims
        name = claims.get(self.username_claim) or claims.get("sub")
        groups = claims.get(self.groups_claim) or []
        if not isinstance(name, str) or not name:
            raise ValueError(f"the ID token has no {self.username_claim!r} or sub claim")
        return Identity(name, tuple(g for g in groups if isinstance(g, str)) if isinstance(groups, list) else ())


async def _get_json(url: str, **kwargs: Any) -> dict[str, Any]:
    response = await AsyncHTTPClient().fetch(url, request_timeout=10, **kwargs)
    return json.loads(response.body)


class Gate:
    """Everything the handlers share: the config, the cookie key, the users, the provider, the failures."""

    def __init__(self, config: SigninConfig, key: bytes) -> None:
        self.key = key
        self.failures = FailedSignins(config.failed_per_minute)
        self.reconfigure(config)

    def reconfigure(self, config: SigninConfig) -> None:
        """Take new settings (`bokeh-stack apply` sends SIGHUP): the failures counted so far are kept."""
        self.config = config
        self.users = Users(Path(config.users_file))
        self.provider = Provider(config.oidc) if config.mode == "oidc" else None
        self.failures.per_minute = config.failed_per_minute
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(config.templates), autoescape=True, undefined=jinja2.StrictUndefined
        )
        self.index_page = env.get_template("nginx/index.html.j2")
        self.signin_page = env.get_template("nginx/signin.html.j2")

    def cookie(self, identity: Identity) -> bytes:
        value = json.dumps({"u": identity.name, "g": list(identity.groups)})
        return create_signed_value(self.key, COOKIE, value)

    def identity(self, cookie: str | None) -> Identity | None:
        if not cookie:
            return None
        value = decode_signed_value(self.key, COOKIE, cookie, max_age_days=self.config.session_hours / 24)
        if value is None:
            return None  # forged, another key's, expired or not one of ours
        try:
            raw = json.loads(value)
            identity = Identity(str(raw["u"]), tuple(str(g) for g in raw["g"]))
        except (ValueError, KeyError, TypeError):
            return None
        if self.config.mode == "password":
            user = self.users.get(identity.name)  # removed since: signed out; groups as they are now
            return Identity(user.name, user.groups) if user else None
        return identity


class Page(RequestHandler):
    gate: Gate

    def initialize(self, gate: Gate) -> None:
        self.gate = gate

    @property
    def prefix(self) -> str:
        return self.gate.config.prefix

    @property
    def https(self) -> bool:
        return self.request.headers.get("X-Forwarded-Proto") == "https"

    @property
    def client(self) -> str:
        return self.request.headers.get("X-Real-IP", "") or "unknown"

    def signed_in(self) -> Identity | None:
        return self.gate.identity(self.get_cookie(COOKIE))

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")

    def own_cookie(self, name: str, value: str | bytes, max_age: int, path: str | None = None) -> None:
        self.set_cookie(
            name, value, path=path or (self.prefix or "/"), max_age=max_age, httponly=True, samesite="Lax",
            secure=self.https,
        )  # fmt: skip

    def page(self, template: jinja2.Template, **values: Any) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(template.render(s={"prefix": self.prefix}, **self.gate.config.versions, **values))

    def safe_next(self, target: str | None) -> str:
        """Where to go after signing in: a path of this stack only (never another site)."""
        home = f"{self.prefix}/"
        if not target or not target.startswith(home) or target.startswith("//") or "\\" in target:
            return home
        return target

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"{status_code} {self._reason}\n")

    def log_exception(self, typ, value, tb) -> None:  # bounded: a client's input never reaches the log whole
        if isinstance(value, HTTPError):
            return
        log.error("%s %s: %s", self.request.method, self.request.path[:200], str(value)[:500])


class Check(Page):
    """nginx's auth_request: 204 with the user's name, 401 not signed in, 403 signed in without access."""

    def get(self, app: str = "") -> None:
        identity = self.signed_in()
        if identity is None:
            raise HTTPError(401)
        if app and not may_open(self.gate.config.access, identity, app):
            raise HTTPError(403)
        self.set_header(USER_HEADER, header_value(identity.name))
        self.set_status(204)


class Required(Page):
    """What nginx shows for a page that needs sign-in: the way to the sign-in page, and back after it."""

    def get(self) -> None:
        target = self.request.headers.get("X-Original-URI", "")
        self.redirect(f"{self.prefix}/login?{urllib.parse.urlencode({'next': self.safe_next(target)})}", status=303)


class Forbidden(Page):
    def get(self) -> None:
        identity = self.signed_in()
        self.set_status(403)
        self.page(
            self.gate.signin_page,
            mode="forbidden",
            user=identity.name if identity else None,
            message="",
            next="",
            csrf="",
        )


class Index(Page):
    def get(self) -> None:
        identity = self.signed_in()
        if identity is None:
            self.redirect(f"{self.prefix}/login", status=303)
            return
        apps = [a for a in self.gate.config.apps if may_open(self.gate.config.access, identity, a["name"])]
        self.page(self.gate.index_page, apps=apps, user=identity.name)


class Login(Page):
    async def get(self) -> None:
        target = self.safe_next(self.get_argument("next", None))
        if self.gate.provider is not None:
            await self.to_provider(target)
            return
        self.form(target)

    def form(self, target: str, message: str = "", status: int = 200) -> None:
        token = secrets.token_urlsafe(24)
        self.own_cookie(CSRF_COOKIE, token, FLOW_MAX_AGE_S, path=f"{self.prefix}/login")
        self.set_status(status)
        self.page(self.gate.signin_page, mode="password", user=None, message=message, next=target, csrf=token)

    async def post(self) -> None:
        if self.gate.provider is not None:
            raise HTTPError(405)
        target = self.safe_next(self.get_body_argument("next", None))
        sent, expected = self.get_body_argument("csrf", ""), self.get_cookie(CSRF_COOKIE) or ""
        if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
            self.form(target, "The sign-in form had expired: please sign in again.", status=400)
            return
        now = time.monotonic()
        wait = self.gate.failures.retry_after(self.client, now)
        if wait:
            self.set_header("Retry-After", str(wait))
            self.form(target, f"Too many failed sign-ins from your address: try again in {wait} s.", status=429)
            return
        name, password = self.get_body_argument("username", ""), self.get_body_argument("password", "")
        user = self.gate.users.get(name)
        # Argon2 takes tens of milliseconds: off the event loop, so that nginx's checks are not held up.
        ok = await asyncio.get_running_loop().run_in_executor(None, users.verify, user, password)
        if not ok or user is None:
            self.gate.failures.record(self.client, now)
            log.warning("failed sign-in as %r from %s", name[:LOGGED_NAME_CHARS], self.client)
            self.form(target, "Wrong user name or password.", status=401)
            return
        self.signed_in_as(Identity(user.name, user.groups), target)

    def signed_in_as(self, identity: Identity, target: str) -> None:
        log.info("%r signed in from %s", identity.name[:LOGGED_NAME_CHARS], self.client)
        self.own_cookie(COOKIE, self.gate.cookie(identity), self.gate.config.session_hours * 3600)
        self.redirect(target, status=303)

    def redirect_uri(self) -> str:
        scheme = "https" if self.https else "http"
        return f"{scheme}://{self.request.host}{self.prefix}/login/callback"

    async def to_provider(self, target: str) -> None:
        provider = self.gate.provider
        try:
            metadata = await provider.metadata()
        except (OSError, HTTPClientError, ValueError) as e:
            log.error("the OpenID Connect provider %s did not answer: %s", provider.issuer, e)
            raise HTTPError(503) from None
        flow = {"state": secrets.token_urlsafe(24), "nonce": secrets.token_urlsafe(24),
                "verifier": secrets.token_urlsafe(48), "next": target}  # fmt: skip
        signed = create_signed_value(self.gate.key, FLOW_COOKIE, json.dumps(flow))
        self.own_cookie(FLOW_COOKIE, signed, FLOW_MAX_AGE_S, path=f"{self.prefix}/login")
        self.redirect(provider.authorization_url(metadata, self.redirect_uri(), flow), status=303)


class Callback(Login):
    async def post(self) -> None:
        raise HTTPError(405)

    async def get(self) -> None:
        provider = self.gate.provider
        if provider is None:
            raise HTTPError(404)
        raw = decode_signed_value(
            self.gate.key, FLOW_COOKIE, self.get_cookie(FLOW_COOKIE), max_age_days=FLOW_MAX_AGE_S / 86400
        )
        flow = json.loads(raw) if raw else None
        state, code = self.get_argument("state", ""), self.get_argument("code", "")
        if not flow or not hmac.compare_digest(state.encode(), flow["state"].encode()) or not code:
            log.warning("a sign-in callback from %s without its flow, state or code", self.client)
            raise HTTPError(400)
        self.clear_cookie(FLOW_COOKIE, path=f"{self.prefix}/login")
        try:
            identity = await provider.identity(code, self.redirect_uri(), flow)
        except Exception as e:  # the provider refused the code, or its token does not check out
            log.warning("sign-in at %s failed for %s: %s", provider.issuer, self.client, str(e)[:300])
            raise HTTPError(401) from None
        self.signed_in_as(identity, self.safe_next(flow["next"]))


class Logout(Page):
    def get(self) -> None:
        self.clear_cookie(COOKIE, path=self.prefix or "/")
        self.redirect(f"{self.prefix}/login", status=303)


def application(gate: Gate) -> Application:
    prefix = gate.config.prefix
    handlers = [
        (f"{CHECK_PATH}/?([A-Za-z0-9_-]*)", Check),
        (REQUIRED_PATH, Required),
        (FORBIDDEN_PATH, Forbidden),
        (f"{prefix}/", Index),
        (f"{prefix}/login", Login),
        (f"{prefix}/login/callback", Callback),
        (f"{prefix}/logout", Logout),
    ]
    return Application([(path, handler, {"gate": gate}) for path, handler in handlers], log_function=lambda h: None)


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    [config_file] = argv
    config = SigninConfig.read(Path(config_file))
    stack_secret = os.environ.get(secret.ENV_VAR, "")
    if len(stack_secret) < 32:
        log.error("no secret in %s (supervisord hands it over): cannot sign anyone in", secret.ENV_VAR)
        return 1
    gate = Gate(config, cookie_key(stack_secret))
    socket = bind_unix_socket(config.socket, mode=0o600)
    server = HTTPServer(application(gate), xheaders=True, max_header_size=64 * 1024, max_body_size=64 * 1024)
    server.add_socket(socket)
    loop = IOLoop.current()

    def reread() -> None:
        try:
            gate.reconfigure(SigninConfig.read(Path(config_file)))
        except (OSError, ValueError, TypeError) as e:
            log.error("kept the settings it had: cannot read %s: %s", config_file, e)
            return
        log.info("read %s again: sign-in (%s)", config_file, gate.config.mode)

    signal.signal(signal.SIGHUP, lambda *_: loop.add_callback_from_signal(reread))
    log.info("sign-in (%s) for %s/ on %s", config.mode, config.prefix, config.socket)
    loop.start()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
