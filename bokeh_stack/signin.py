"""The sign-in process: `python -m bokeh_stack.signin SIGNIN_FILE`, a small tornado server on a unix socket that
nginx alone reaches (settings auth.mode password or oidc). nginx asks it, by `auth_request`, about every index,
app page, autoload.js and websocket; it also serves the pages a person sees:

    <prefix>/                the index, listing only the apps this user may open
    <prefix>/login           the sign-in form (password) or the way to the OpenID Connect provider (oidc)
    <prefix>/login/callback  where the provider sends the browser back (oidc)
    <prefix>/logout          signs out: a POST with the form's CSRF token (a GET shows the button)

The signed-in state is one signed cookie (COOKIE: the user's name and groups, a random id, and in mode password a
fingerprint of the user's password hash and groups), HttpOnly, SameSite=Lax, Secure under https, HMAC-SHA256 with
the sign-in key: a secret of its own (signin.key beside the users file, made at provision time), which only this
process reads; it runs as a user other than the workers'. Removing a user or changing a password or groups
revokes that user's cookies and closes their websockets on every worker; signing out revokes that one cookie
(signin_rules.RevokedCookies). SIGNIN_FILE (signin.json, rendered from the settings) says the rest.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import secrets
import signal
import sys
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import jinja2
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop, PeriodicCallback
from tornado.netutil import bind_unix_socket
from tornado.web import Application, HTTPError, RequestHandler, create_signed_value, decode_signed_value

from . import fleet, users
from .identity import SIGNIN_COOKIE, USER_HEADER, header_value
from .signin_rules import RevokedCookies, SigninLimits, safe_next

PROGRAM = "bokeh_stack_signin"
COOKIE = SIGNIN_COOKIE
# The OpenID Connect flow in progress (state, nonce, PKCE verifier), for the callback alone.
FLOW_COOKIE = "bokeh_stack_oidc"
FLOW_MAX_AGE_S = 600
# The sign-in form's CSRF cookie: a signed random value; the form carries an HMAC of it, not the value. Under
# https its name has the __Host- prefix (no other host or path can set it).
CSRF_COOKIE = "bokeh_stack_csrf"
# nginx's own questions: /_check/APP (may this request open APP; no APP: any page), and the pages it shows
# instead of a refused one.
CHECK_PATH = "/_check"
REQUIRED_PATH = "/_required"
FORBIDDEN_PATH = "/_forbidden"
LOGGED_NAME_CHARS = 64
# How often the users file is looked at for removed users and changed passwords or groups, and how often a worker
# that did not answer is asked again to close their websockets.
USERS_CHECK_S = 1.0
REVOKE_TRIES = 5
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
    key_file: str
    revoked_file: str
    # Every worker (fleet.Target fields) and the path where each closes a signed-out user's websockets.
    workers: list[dict[str, Any]]
    revoke_path: str
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
        targets = [fleet.Target(**t) for t in self.config.workers]
        for attempt in range(REVOKE_TRIES):
            resolved = await fleet.resolve_targets(targets)
            answers = await asyncio.gather(*(
                fleet.request(t.host, t.port, self.config.revoke_path, fleet.SCRAPE_TIMEOUT_S, t.socket, body)
                for t in resolved
            ))  # fmt: skip
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
        values = {"user": None, "message": "", "next": "", "csrf": "", **values}
        self.finish(template.render(s={"prefix": self.prefix}, **self.gate.config.versions, **values))

    def safe_next(self, target: str | None) -> str:
        return safe_next(self.prefix, target)

    def same_origin(self) -> bool:
        """A form posted from this stack's own pages: a browser's Origin (or Referer) names this scheme, host and
        port. A page on the same host name at another port shares its cookies but not its origin. Clients that
        send neither (not browsers) are held to the CSRF token alone."""
        sent = self.request.headers.get("Origin")
        if sent is None:
            referer = self.request.headers.get("Referer")
            if not referer:
                return True
            parts = urllib.parse.urlsplit(referer)
            sent = f"{parts.scheme}://{parts.netloc}"
        return sent == f"{'https' if self.https else 'http'}://{self.request.host}"

    def refuse_cross_origin(self) -> None:
        if not self.same_origin():
            log.warning("refused a form posted to %s from %s", self.request.path[:200], self.client)
            raise HTTPError(403)

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
        kept = self.safe_next(target)
        if kept != target:  # too long to come back to (or not one of ours): the page without its query
            kept = self.safe_next(target.partition("?")[0])
        self.redirect(f"{self.prefix}/login?{urllib.parse.urlencode({'next': kept})}", status=303)


class Forbidden(Page):
    def get(self) -> None:
        identity = self.signed_in()
        self.set_status(403)
        self.page(self.gate.signin_page, mode="forbidden", user=identity.name if identity else None)


class Index(Page):
    def get(self) -> None:
        identity = self.signed_in()
        if identity is None:
            self.redirect(f"{self.prefix}/login", status=303)
            return
        apps = [a for a in self.gate.config.apps if may_open(self.gate.config.access, identity, a["name"])]
        self.page(self.gate.index_page, apps=apps, user=identity.name, logout_csrf=self.gate.logout_token(identity))


class Login(Page):
    async def get(self) -> None:
        target = self.safe_next(self.get_argument("next", None))
        if self.gate.provider is not None:
            await self.to_provider(target)
            return
        self.form(target)

    @property
    def csrf_cookie(self) -> str:
        return f"__Host-{CSRF_COOKIE}" if self.https else CSRF_COOKIE

    def form(self, target: str, message: str = "", status: int = 200) -> None:
        nonce = secrets.token_urlsafe(24)
        signed = create_signed_value(self.gate.key, CSRF_COOKIE, nonce)
        # __Host- cookies must have Path=/ (and Secure, which own_cookie sets under https).
        self.own_cookie(self.csrf_cookie, signed, FLOW_MAX_AGE_S, path="/" if self.https else f"{self.prefix}/login")
        self.set_status(status)
        self.page(self.gate.signin_page, mode="password", message=message, next=target,
                  csrf=self.gate.csrf_token(nonce))  # fmt: skip

    def form_is_ours(self) -> bool:
        nonce = decode_signed_value(
            self.gate.key, CSRF_COOKIE, self.get_cookie(self.csrf_cookie), max_age_days=FLOW_MAX_AGE_S / 86400
        )
        sent = self.get_body_argument("csrf", "")
        return nonce is not None and hmac.compare_digest(sent.encode(), self.gate.csrf_token(nonce.decode()).encode())

    async def post(self) -> None:
        if self.gate.provider is not None:
            raise HTTPError(405)
        self.refuse_cross_origin()
        target = self.safe_next(self.get_body_argument("next", None))
        if not self.form_is_ours():
            self.form(target, "The sign-in form had expired: please sign in again.", status=400)
            return
        name, password = self.get_body_argument("username", ""), self.get_body_argument("password", "")
        now = time.monotonic()
        wait, limited = self.gate.limits.retry_after(self.client, name, now)
        if wait:
            self.set_header("Retry-After", str(wait))
            whose = "from your address" if limited == "address" else "for this user"
            self.form(target, f"Too many failed sign-ins {whose}: try again in {wait} s.", status=429)
            return
        # Counted before it is checked: attempts sent at once cannot all be checked before the first failure counts.
        self.gate.limits.attempt(self.client, name, now)
        user = self.gate.users.get(name)
        # Argon2 takes tens of milliseconds: off the event loop, so that nginx's checks are not held up.
        ok = await asyncio.get_running_loop().run_in_executor(None, users.verify, user, password)
        if not ok or user is None:
            # What was typed as the name is often a password: only a known user's name is written out.
            who = repr(user.name) if user else "an unknown user"
            log.warning("failed sign-in as %s from %s", who, self.client)
            self.form(target, "Wrong user name or password.", status=401)
            return
        self.gate.limits.succeeded(self.client, name, now)
        self.signed_in_as(Identity(user.name, user.groups), target, user)

    def signed_in_as(self, identity: Identity, target: str, user: users.User | None = None) -> None:
        log.info("%r signed in from %s", identity.name[:LOGGED_NAME_CHARS], self.client)
        self.own_cookie(COOKIE, self.gate.cookie(identity, user), self.gate.config.session_hours * 3600)
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
    """GET shows the sign-out button (a link from another site signs nobody out); POST with its token signs out and
    revokes that cookie, also where a copy of it is kept."""

    def get(self) -> None:
        identity = self.signed_in()
        if identity is None:
            self.redirect(f"{self.prefix}/login", status=303)
            return
        self.page(self.gate.signin_page, mode="logout", user=identity.name, csrf=self.gate.logout_token(identity))

    def post(self) -> None:
        self.refuse_cross_origin()
        identity = self.signed_in()
        if identity is not None:
            sent = self.get_body_argument("csrf", "")
            if not hmac.compare_digest(sent.encode(), self.gate.logout_token(identity).encode()):
                raise HTTPError(400)
            self.gate.revoked.revoke(identity.cookie_id, time.time() + self.gate.config.session_hours * 3600)
            log.info("%r signed out from %s", identity.name[:LOGGED_NAME_CHARS], self.client)
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
    try:
        key = read_key(Path(config.key_file))
    except (OSError, ValueError) as e:
        log.error("cannot sign anyone in without the sign-in key: %s", e)
        return 1
    gate = Gate(config, key)
    # Its directory (privileges.sockets_dir) gives it the group of nginx's workers.
    socket = bind_unix_socket(config.socket, mode=0o660)
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
    PeriodicCallback(gate.watch_users, USERS_CHECK_S * 1000).start()
    log.info("sign-in (%s) for %s/ on %s", config.mode, config.prefix, config.socket)
    loop.start()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
