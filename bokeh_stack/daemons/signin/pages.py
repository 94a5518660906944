"""The sign-in process's pages: nginx's questions (may this request come in?) and the pages a person sees (the
index, the sign-in form or the way to the provider, the callback, sign-out)."""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
import time
import urllib.parse
from typing import Any

import jinja2
from tornado.httpclient import HTTPClientError
from tornado.web import Application, HTTPError, RequestHandler, create_signed_value, decode_signed_value

from bokeh_stack.config import topology
from bokeh_stack.config.topology import route
from bokeh_stack.daemons.signin import users
from bokeh_stack.daemons.signin.gate import COOKIE, Gate, log
from bokeh_stack.daemons.signin.keys import Identity, may_open
from bokeh_stack.daemons.signin.rules import safe_next
from bokeh_stack.identity import USER_HEADER, header_value

# The OpenID Connect flow in progress (state, nonce, PKCE verifier), for the callback alone.
FLOW_COOKIE = "bokeh_stack_oidc"
FLOW_MAX_AGE_S = 600
# The sign-in form's CSRF cookie: a signed random value; the form carries an HMAC of it, not the value. Under
# https its name has the __Host- prefix (no other host or path can set it).
CSRF_COOKIE = "bokeh_stack_csrf"
LOGGED_NAME_CHARS = 64


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
        routes = topology.routes(self.prefix)
        self.finish(template.render(s={"prefix": self.prefix}, routes=routes, **self.gate.config.versions, **values))

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
        (f"{route('check')}/?([A-Za-z0-9_-]*)", Check),
        (route("required"), Required),
        (route("forbidden"), Forbidden),
        (route("index", prefix), Index),
        (route("login", prefix), Login),
        (route("login_callback", prefix), Callback),
        (route("logout", prefix), Logout),
    ]
    return Application([(path, handler, {"gate": gate}) for path, handler in handlers], log_function=lambda h: None)
