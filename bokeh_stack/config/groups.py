"""The groups of settings (a mapping each in the settings file): their settings, types, defaults and documentation.
config/model.py puts them together with the top-level settings."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

from bokeh_stack.config.values import (
    AbsolutePath,
    Address,
    AppNames,
    CookieNames,
    HeaderNames,
    Names,
    Networks,
    OpsServerNames,
    PoolWorkers,
    Port,
    Positive,
    SessionStore,
    ZeroOrPositive,
)


class Group(BaseModel):
    """A group of settings (a mapping in the settings file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Oidc(Group):
    issuer: StrictStr = Field(
        "",
        description=(
            "The OpenID Connect provider's issuer URL (its /.well-known/openid-configuration is read at start). The "
            "provider must allow the redirect URI <scheme>://<server name><prefix>/login/callback."
        ),
    )
    client_id: StrictStr = Field("", description="This stack's client id at the provider.")
    client_secret_file: AbsolutePath = Field(
        "", description=("The absolute path of a file holding the client secret (never the secret itself in settings).")
    )
    scopes: Names = Field(("openid", "profile", "email"), description="The scopes asked for; openid among them.")
    username_claim: StrictStr = Field("preferred_username", description="The ID token claim that names the user.")
    groups_claim: StrictStr = Field("groups", description="The ID token claim listing the user's groups (for access).")


class Auth(Group):
    mode: Literal["none", "password", "oidc"] = Field(
        "none",
        description=(
            "Who may come in: none (everyone who reaches nginx), password (users managed by `bokeh-stack users`) or "
            "oidc (OpenID Connect sign-in at the provider below). Signed in, a browser holds a signed cookie for every "
            "app."
        ),
    )
    session_hours: Positive = Field(12, description="How long a sign-in lasts.")
    users_file: AbsolutePath = Field(
        "",
        description=(
            "mode password: the users file (password hashes, groups), written by `bokeh-stack users add`. An absolute "
            "path; empty: <runtime_dir>/users.json."
        ),
    )
    failed_per_minute: Positive = Field(
        5,
        description=(
            "Failed sign-ins one client address may make a minute; more are refused without checking the password."
        ),
    )
    oidc: Oidc = Field(default_factory=Oidc, description="mode oidc: the provider.")


class Session(Group):
    token_expiration_s: Positive = Field(
        86400,
        description=(
            "How long a page's token may be used to open (or, after a worker restart, re-open) its websocket."
        ),
    )
    unused_lifetime_ms: Positive = Field(
        15000, description=("A session with no open websocket is discarded this long after it was last used ...")
    )
    check_unused_ms: Positive = Field(5000, description="... checked this often.")
    keep_alive_ms: Positive = Field(
        37000, description=("Websocket ping interval; nginx's websocket read timeout is derived from it.")
    )
    max_message_bytes: Positive = Field(20971520, description="Largest websocket message a worker accepts.")
    pass_cookies: CookieNames = Field(
        (),
        description=(
            "Request cookies a page's session token carries to the app (session_context.request.cookies). Bokeh "
            "copies every one by default, credentials too, into the token it embeds in the page, readable by any "
            "script there; here none is copied unless listed, e.g. [theme]."
        ),
    )
    pass_headers: HeaderNames = Field(
        (),
        description=(
            "Request headers a page's session token carries to the app (session_context.request.headers), e.g. "
            "[Accept-Language]. X-Real-IP (the client's address, as nginx saw it) is always passed."
        ),
    )
    client_session_ids: StrictBool = Field(
        False,
        description=(
            "Bokeh lets a client choose its session's id (the bokeh-session-id argument, the Bokeh-Session-Id header, "
            "a bokeh-token argument) and joins an existing session of that id: a link carrying one drops its visitor "
            "into the sender's session. false: every page gets a new session of the server's making. true only for "
            "embedding schemes that pull a session by id (bokeh.client.pull_session), never with sign-in."
        ),
    )
    compression: StrictBool = Field(False, description="Websocket permessage-deflate (python -m bench compression).")
    store: SessionStore = Field(
        "",
        description=(
            "Where the workers keep what each session's user did, so that a tab whose worker went away comes back "
            "as its user left it, on whichever worker it reaches (resume). Empty: <runtime_dir>/sessions, for the "
            "workers of one host; redis://HOST:PORT/DB: a Redis every worker reaches (several hosts, containers); "
            "off: tabs reconnect to a fresh session."
        ),
    )
    redis_password_file: AbsolutePath = Field(
        "",
        description=(
            "With a redis:// store: the absolute path of a file holding Redis's password, which redis-server reads "
            "too (Compose, Swarm, Kubernetes: a secret both mount; the redis container makes it if missing). Empty: "
            "derived from the stack's secret (`bokeh-stack secret --redis-password` prints it, for requirepass)."
        ),
    )
    resume_max_bytes: Positive = Field(
        1048576, description="The most kept for one session; a session past it starts afresh after a restart."
    )
    resume_except: Names = Field((), description="Apps whose sessions are never kept, e.g. [admin].")


class Nginx(Group):
    page_timeout_s: Positive = Field(
        60, description=("How long a page request may wait for its worker (runs the app's main.py).")
    )
    page_rate_per_s: ZeroOrPositive = Field(
        10,
        description=(
            "Page requests (each builds a Bokeh session) one client address may make per second, beyond a burst of "
            "page_burst; more get 429 with Retry-After, so one client cannot fill a worker with orphan sessions. 0 "
            "turns the limit off. Raise it when many users share one address (NAT) and open pages at once."
        ),
    )
    page_burst: Positive = Field(40, description="See page_rate_per_s.")
    client_timeout_s: Positive = Field(
        10,
        description=(
            "A client must send its request headers (and each part of a body) within this time, or nginx cuts it off "
            '(slow-header clients, "slowloris").'
        ),
    )
    ws_per_address: ZeroOrPositive = Field(
        1000,
        description=(
            "Websockets one client address may hold open at once (each open tab holds one). More get 429. 0: no limit."
        ),
    )
    ws_open_rate_per_s: ZeroOrPositive = Field(
        50,
        description=(
            "Websockets one client address may open per second beyond a burst of ws_open_burst (a classroom behind "
            "one NAT address opens a few hundred at once after a restart). More get 429. 0: no limit."
        ),
    )
    ws_open_burst: Positive = Field(500, description="See ws_open_rate_per_s.")


class Tls(Group):
    certificate: AbsolutePath = Field(
        "",
        description=(
            "HTTPS is on when certificate and key are set: absolute paths of PEM files nginx can read (the "
            "certificate with its chain, the key). nginx then serves HTTPS on tls.port, `port` redirects there, and "
            "websockets use wss://."
        ),
    )
    key: AbsolutePath = Field("", description="See certificate.")
    port: Port = Field(8443, description="Where nginx serves HTTPS.")
    hsts_max_age_s: ZeroOrPositive = Field(
        31536000, description=("Strict-Transport-Security max-age sent over HTTPS; 0 sends none.")
    )


class Watchdog(Group):
    timeout_s: ZeroOrPositive = Field(
        5,
        description=(
            "A worker that does not answer its probe within timeout_s (checked every 5 s) is restarted: a hung worker "
            "(deadlock, stuck C call, SIGSTOP) is back within ~20 s. 0 turns the watchdog off."
        ),
    )
    start_grace_s: Positive = Field(
        30,
        description=(
            "A (re)started worker is left alone this long (supervisord's startsecs): raise it above the time your "
            "apps' server_lifecycle on_server_loaded takes, or the watchdog restarts a worker that is still loading."
        ),
    )


class Ops(Group):
    address: Address = Field(
        "127.0.0.1",
        description=(
            "The operators' listener (nginx, never the public port): /metrics, every worker and nginx in one "
            "Prometheus scrape, and /ops, a live dashboard of the fleet. 127.0.0.1: this machine only."
        ),
    )
    port: Port = Field(9180, description="The operators' listener's port.")
    allow: Networks = Field(
        (),
        description=(
            "Networks allowed in besides loopback, as CIDRs (e.g. [10.0.0.0/8] for a Prometheus server on the LAN); "
            "everyone else gets 403."
        ),
    )
    server_names: OpsServerNames = Field(
        (),
        description=(
            "The host names (and addresses) the ops listener answers to; any other Host gets 421, so that a web page "
            "an operator has open cannot reach it under a name of its own (DNS rebinding). Empty: localhost, "
            "127.0.0.1, [::1] and ops.address. Add the name Prometheus or a browser uses, e.g. [ops.example.com, "
            "10.0.0.7]."
        ),
    )
    metrics: StrictBool = Field(
        True,
        description=(
            "The workers count sessions, messages and document builds for /metrics. false: they count nothing (to "
            "measure what counting costs; make bench)."
        ),
    )


class Redis(Group):
    run: StrictBool = Field(
        False,
        description=(
            "Run redis-server (Debian's redis-server package; the Salt formula installs it) on this host under the "
            "stack's supervisord, as the workers' user, for session.store: redis:// when the workers are on several "
            "hosts. Its password: session.redis_password_file, else derived from the secret (a host without the "
            "workers' secret, role balancer, needs the file)."
        ),
    )
    address: Address = Field(
        "127.0.0.1",
        description=(
            "Where it listens: an address every worker host reaches, on a private network (a password guards it; "
            "nothing encrypts it)."
        ),
    )
    port: Port = Field(6379, description="Its port.")
    max_memory_mb: Positive = Field(
        256, description="The most it holds; past it, the records that expire soonest go first (never a page)."
    )


class Recycle(Group):
    """Limits past which a worker is replaced (daemons/pools.py): a new one first, then the old one drained."""

    max_rss_mb: ZeroOrPositive = Field(
        0, description="A worker whose resident memory passes this (MB) is replaced. 0: no limit."
    )
    max_age_h: ZeroOrPositive = Field(0, description="A worker older than this (hours) is replaced. 0: no limit.")
    max_sessions: ZeroOrPositive = Field(
        0, description="A worker that has made this many sessions is replaced (needs ops.metrics). 0: no limit."
    )


class PoolSpec(Group):
    apps: AppNames = Field(description=("The apps this pool serves (no other pool serves them)."))
    workers: PoolWorkers = Field(1, description="The pool's workers: a fixed size, unless min_workers or max_workers.")
    min_workers: ZeroOrPositive | None = Field(None, description="The fewest it runs; null: workers.")
    max_workers: Positive | None = Field(None, description="The most it runs; null: workers.")
    sessions_per_worker: Positive | None = Field(None, description="null: the top-level sessions_per_worker.")
    idle_timeout_s: Positive | None = Field(None, description="null: the top-level idle_timeout_s.")
    recycle: Recycle | None = Field(
        None, description="Its own limits, each one given replacing the top-level recycle's; null: those."
    )
    base_port: Port | None = Field(None, description="Its first port; none: the next free range.")
