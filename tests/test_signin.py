"""Sign-in (auth.mode password) and per-app access, against one real stack: nginx asks the sign-in process about
every index, app page, autoload.js and websocket; users are managed with `bokeh-stack users`."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import re
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from bokeh.util.token import get_session_id, get_token_payload
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.web import create_signed_value
from tornado.websocket import websocket_connect

from bokeh_stack.config import plan as plan_module
from bokeh_stack.config import topology
from bokeh_stack.daemons.signin.gate import COOKIE
from bokeh_stack.daemons.signin.pages import CSRF_COOKIE
from bokeh_stack.identity import USER_HEADER
from bokeh_stack.provisioning import privileges
from harness.pageview import _TOKEN, CookieJar, open_page, page_view, sign_in, websocket_url
from harness.stack import fetch, free_ports, run, start_stack, wait_for
from tests.test_stack import SHIPPED_APPS

pytestmark = [pytest.mark.stack, pytest.mark.usefixtures("nginx_available")]

PASSWORDS = {"alice": "correct horse battery", "bob": "bob's long password", "carol": "carol's password"}
ACCESS = {"cosine": {"users": ["alice"]}, "streaming": {"groups": ["lab"]}}


def users(stack, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bokeh_stack", "users", *args, "--runtime-dir", str(stack.plan.run_dir)],
        input=stdin, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Password sign-in, per-app access; 127.0.0.1 a trusted proxy, so that each test can be its own client
    address (X-Forwarded-For) for the failed sign-in limit."""
    running = start_stack(
        tmp_path_factory.mktemp("signin"), SHIPPED_APPS, workers=2, auth={"mode": "password"}, access=ACCESS,
        trusted_proxies=["127.0.0.1/32"],
    )  # fmt: skip
    try:
        for name, password in PASSWORDS.items():
            groups = ["--group", "lab"] if name == "bob" else []
            done = users(running, "add", name, "--password-stdin", *groups, stdin=password + "\n")
            assert done.returncode == 0, done.stderr
        yield running
    finally:
        running.stop()


def connect_ws(request, token: str):
    async def connect():
        ws = await websocket_connect(request, subprotocols=["bokeh", token])
        ws.close()

    run(connect())


def signed_in(stack, name: str, client: str = "") -> CookieJar:
    headers = {"X-Forwarded-For": client} if client else {}
    status, jar, _ = run(sign_in(stack.url("").rstrip("/"), name, PASSWORDS[name], headers))
    assert status == 303, f"signing in as {name}: HTTP {status}"
    return jar


def test_without_signing_in_no_page_and_no_websocket_opens(stack):
    assert fetch(stack.url("/")).headers["Location"] == "/login"
    page = fetch(stack.url("/cosine?N=5&x=1"))
    assert page.code == 303 and page.headers["Location"] == "/login?next=%2Fcosine%3FN%3D5%26x%3D1"
    assert fetch(stack.url("/cosine/autoload.js?bokeh-autoload-element=x")).code == 303
    with pytest.raises(HTTPClientError) as refused:
        connect_ws(HTTPRequest(websocket_url(stack.url("/cosine"))), "no-token")
    assert refused.value.code == 401
    assert fetch(stack.url("/healthz")).code == 200, "health checks need no sign-in"


def test_a_signed_in_user_opens_apps_and_the_cookie_never_reaches_the_page(stack):
    status, jar, response = run(sign_in(stack.url("").rstrip("/"), "alice", PASSWORDS["alice"]))
    assert status == 303 and response.headers["Location"] == "/"
    cookie = next(h for h in response.headers.get_list("Set-Cookie") if h.startswith(COOKIE))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie, cookie

    page = fetch(stack.url("/press_me"), jar)
    assert page.code == 200 and page.headers["Cache-Control"] == "no-store"
    assert jar.cookies[COOKIE] not in page.body.decode()
    payload = get_token_payload(_TOKEN.search(page.body).group(1).decode())
    assert payload["cookies"] == {} and payload["headers"][USER_HEADER] == "alice"

    greeting = run(page_view(stack.url("/press_me"), jar=jar)).document.select_one({"name": "greeting"})
    assert greeting.visible and "alice" in greeting.text, "the shipped app shows who signed in"
    index = fetch(stack.url("/"), jar).body.decode()
    assert "Signed in as <strong>alice</strong>" in index


def test_a_token_opens_no_websocket_without_its_users_cookie(stack):
    alice, bob = signed_in(stack, "alice"), signed_in(stack, "bob")
    page = fetch(stack.url("/random_walk"), alice)
    token = _TOKEN.search(page.body).group(1).decode()
    origin = {"Origin": stack.url("").rstrip("/")}

    async def connect(jar: CookieJar | None):
        headers = {**origin, **({"Cookie": jar.header()} if jar else {})}
        ws = await websocket_connect(HTTPRequest(websocket_url(stack.url("/random_walk")), headers=headers),
                                     subprotocols=["bokeh", token])  # fmt: skip
        message = await asyncio.wait_for(ws.read_message(), 10)
        ws.close()
        return message

    with pytest.raises(HTTPClientError) as refused:
        run(connect(None))
    assert refused.value.code == 401, "the token alone opens nothing"
    with pytest.raises(HTTPClientError) as refused:
        run(connect(bob))
    assert refused.value.code == 403, "bob's cookie with alice's token: the worker refuses it"
    assert run(connect(alice)) is not None, "alice's own token and cookie: the ACK"


def test_a_link_with_a_session_id_opens_no_one_elses_session(stack):
    """bob's page's session id (or token), sent to alice, gets her a session of her own: never bob's, and never one
    bob's token could open."""
    alice, bob = signed_in(stack, "alice"), signed_in(stack, "bob")
    bobs = _TOKEN.search(fetch(stack.url("/press_me"), bob).body).group(1).decode()
    for url, headers in (
        (stack.url(f"/press_me?bokeh-session-id={get_session_id(bobs)}"), {}),
        (stack.url("/press_me"), {"Bokeh-Session-Id": get_session_id(bobs)}),
        (stack.url(f"/press_me?bokeh-token={bobs}"), {}),
    ):
        page = fetch(url, alice, headers=headers)
        assert page.code == 200
        assert get_session_id(_TOKEN.search(page.body).group(1).decode()) != get_session_id(bobs), url


def test_each_user_sees_and_opens_only_the_apps_access_allows(stack):
    alice, bob = signed_in(stack, "alice"), signed_in(stack, "bob")

    def listed(jar):
        body = fetch(stack.url("/"), jar).body.decode()
        return {app for app in SHIPPED_APPS_NAMES if f'href="/{app}"' in body}

    assert listed(alice) == SHIPPED_APPS_NAMES - {"streaming"}
    assert listed(bob) == SHIPPED_APPS_NAMES - {"cosine"}, "bob is in group lab"
    refused = fetch(stack.url("/cosine"), bob)
    assert refused.code == 403 and "may not open this app" in refused.body.decode()
    token = _TOKEN.search(fetch(stack.url("/cosine"), alice).body).group(1).decode()
    request = HTTPRequest(websocket_url(stack.url("/cosine")), headers={"Cookie": bob.header()})
    with pytest.raises(HTTPClientError) as ws_refused:
        connect_ws(request, token)  # alice's token, bob's cookie
    assert ws_refused.value.code == 403
    assert run(page_view(stack.url("/streaming"), jar=bob)).document.roots


SHIPPED_APPS_NAMES = {d.name for d in SHIPPED_APPS.iterdir() if (d / "main.py").exists()}


def test_failed_sign_ins_are_limited_per_client_and_never_say_whether_the_user_exists(stack):
    base = stack.url("").rstrip("/")
    client = {"X-Forwarded-For": "10.2.0.1"}
    answers = [run(sign_in(base, name, "wrong password", client)) for name in ("alice", "nobody-here")]
    (code_known, _, known), (code_unknown, _, unknown) = answers
    assert code_known == code_unknown == 401

    def without_form_token(body: bytes) -> bytes:
        return re.sub(rb'name="csrf" value="[^"]+"', b"", body)

    assert without_form_token(known.body) == without_form_token(unknown.body), "the same answer, whoever it was"
    for _ in range(3):
        assert run(sign_in(base, "alice", "wrong password", client))[0] == 401
    status, _, limited = run(sign_in(base, "alice", PASSWORDS["alice"], client))
    assert status == 429 and int(limited.headers["Retry-After"]) > 0, "5 failures a minute, then not even the right one"
    assert run(sign_in(base, "alice", PASSWORDS["alice"], {"X-Forwarded-For": "10.2.0.2"}))[0] == 303
    log = (stack.plan.log_dir / f"{topology.SIGNIN}.log").read_text()
    assert "failed sign-in as an unknown user from 10.2.0.1" in log and "failed sign-in as 'alice' from 10.2.0.1" in log
    assert "nobody-here" not in log, "what was typed as a name (often a password) is not written out"


def test_attempts_sent_at_once_all_count_before_any_is_checked(stack):
    """9 wrong passwords sent at once from one address: 5 are checked (the limit a minute), the rest refused unread,
    and the right one after them too."""
    assert users(stack, "add", "dave", "--password-stdin", stdin="dave's long password\n").returncode == 0
    base = stack.url("").rstrip("/")
    client = {"X-Forwarded-For": "10.6.0.1"}

    async def at_once():
        return await asyncio.gather(*(sign_in(base, "dave", f"wrong password {i}", client) for i in range(9)))

    statuses = sorted(status for status, _, _ in run(at_once()))
    assert statuses == [401] * 5 + [429] * 4, statuses
    assert run(sign_in(base, "dave", "dave's long password", client))[0] == 429


def test_many_addresses_get_a_growing_delay_at_one_account(stack):
    """Not a lockout an attacker can hold: after 5 failures an account's next attempt waits 1 s, then 2, 4, ... (at
    most 5 minutes), from whichever address it comes."""
    base = stack.url("").rstrip("/")

    def attempt(i: int):
        return run(sign_in(base, "target-account", "wrong password", {"X-Forwarded-For": f"10.7.0.{i}"}))

    codes = [attempt(i)[0] for i in range(5)]
    assert codes == [401] * 5, codes
    status, _, refused = attempt(5)
    assert status == 429 and b"for this user" in refused.body and int(refused.headers["Retry-After"]) >= 1
    wait_for(lambda: attempt(6)[0] == 401, 5, "the account's attempt after its 1 s delay")
    status, _, refused = attempt(7)
    assert status == 429 and int(refused.headers["Retry-After"]) >= 2, "then 2 s"


def test_a_removed_user_is_signed_out_at_once(stack):
    jar = signed_in(stack, "carol")
    assert fetch(stack.url("/"), jar).code == 200
    removed = users(stack, "remove", "carol")
    assert removed.returncode == 0 and "removed" in removed.stdout
    assert fetch(stack.url("/"), jar).code == 303
    listed = users(stack, "list").stdout
    assert "carol" not in listed and "bob  groups: lab" in listed
    assert "$argon2id$" in stack.plan.users_file.read_text() and "password" not in stack.plan.users_file.read_text()


def test_a_password_change_signs_out_every_cookie_and_closes_the_users_websockets(stack):
    assert users(stack, "add", "erin", "--password-stdin", stdin="erin's first password\n").returncode == 0
    status, jar, _ = run(sign_in(stack.url("").rstrip("/"), "erin", "erin's first password"))
    assert status == 303
    alice = signed_in(stack, "alice")

    async def change_erins_password() -> tuple[float, bool]:
        erins, alices = (
            await open_page(stack.url("/random_walk"), jar=jar),
            await open_page(stack.url("/random_walk"), jar=alice),
        )
        try:
            changed = await asyncio.to_thread(users, stack, "add", "erin", "--password-stdin",
                                              stdin="erin's second password\n")  # fmt: skip
            assert changed.returncode == 0 and "changed" in changed.stdout
            start = time.monotonic()
            while await asyncio.wait_for(erins._ws.read_message(), 5) is not None:
                pass  # its stream, until the worker closes it
            return time.monotonic() - start, alices._ws.protocol is not None and alices._ws.close_code is None
        finally:
            erins.close()
            alices.close()

    seconds, alice_open = run(change_erins_password())
    print(f"erin's websocket closed {seconds:.2f} s after the password change")
    assert seconds < 5, "erin's open websocket closed within 5 s"
    assert alice_open, "alice's websocket stays open"
    assert fetch(stack.url("/"), jar).code == 303, "erin's cookie is signed out"
    assert fetch(stack.url("/"), alice).code == 200
    log = (stack.plan.log_dir / f"{topology.SIGNIN}.log").read_text()
    assert "signed out ['erin']: their websockets closed on 2 workers" in log


def test_signing_out_is_a_post_with_its_token_and_revokes_the_cookie_everywhere(stack):
    jar = signed_in(stack, "alice")
    copy = CookieJar(dict(jar.cookies))
    page = fetch(stack.url("/logout"), jar)
    assert page.code == 200 and b'method="post"' in page.body, "a GET (a link from any site) shows a button"
    assert fetch(stack.url("/"), jar).code == 200, "... and signs nobody out"
    token = re.search(rb'name="csrf" value="([^"]+)"', page.body).group(1).decode()
    form = {"method": "POST", "headers": {"Content-Type": "application/x-www-form-urlencoded"}}
    assert fetch(stack.url("/logout"), jar, body="csrf=", **form).code == 400
    other_site = {**form, "headers": {**form["headers"], "Origin": "https://evil.example"}}
    assert fetch(stack.url("/logout"), jar, body=f"csrf={token}", **other_site).code == 403
    index_token = re.search(rb'name="csrf" value="([^"]+)"', fetch(stack.url("/"), jar).body).group(1).decode()
    assert index_token == token, "the index's sign-out button carries the same token"
    out = fetch(stack.url("/logout"), jar, body=f"csrf={token}", **form)
    assert out.code == 303 and out.headers["Location"] == "/login"
    jar.update(out.headers.get_list("Set-Cookie"))  # as the browser does
    assert fetch(stack.url("/"), jar).code == 303
    assert fetch(stack.url("/"), copy).code == 303, "a copy of the cookie is signed out too"
    assert fetch(stack.url("/cosine"), copy).code == 303


def test_a_trusted_proxys_https_makes_the_sign_in_cookie_secure(stack):
    https = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "10.3.0.1"}
    _, _, response = run(sign_in(stack.url("").rstrip("/"), "alice", PASSWORDS["alice"], https))
    assert "Secure" in next(h for h in response.headers.get_list("Set-Cookie") if h.startswith(COOKIE))
    form = fetch(stack.url("/login"), headers=https)
    [csrf] = form.headers.get_list("Set-Cookie")
    assert csrf.startswith(f"__Host-{CSRF_COOKIE}=") and re.search(r"Path=/(;|$)", csrf) and "Secure" in csrf


def test_bad_cookies_and_a_form_flood_are_answered_cleanly(stack):
    before = stack.rpc().getProcessInfo(topology.SIGNIN)
    key = stack.plan.signin_key_file.read_text().strip().encode()
    value = json.dumps({"u": "alice", "g": [], "i": "x"})
    day = 24 * 3600
    cookies = {
        "forged": "2|1:0|10:1700000000|18:bokeh_stack_signin|8:eyJ1IjoxfQ==|" + "0" * 64,
        "another key": create_signed_value(b"another key", COOKIE, value).decode(),
        "expired": create_signed_value(key, COOKIE, value, clock=lambda: time.time() - day).decode(),
        "not json": create_signed_value(key, COOKIE, "][").decode(),
        "unstamped (no password fingerprint)": create_signed_value(key, COOKIE, value).decode(),
        "made with the workers' secret": create_signed_value(
            stack.plan.secret_file.read_text().strip(), COOKIE, value
        ).decode(),
    }
    for what, cookie in cookies.items():
        answer = fetch(stack.url("/cosine"), headers={"Cookie": f"{COOKIE}={cookie}"})
        assert answer.code == 303, f"a {what} cookie: HTTP {answer.code}"
    huge = fetch(stack.url("/cosine"), headers={"Cookie": f"{COOKIE}={'a' * 100_000}"})
    assert huge.code in (400, 431), huge.code

    def post(i: int) -> int:
        request = urllib.request.Request(
            stack.url("/login"), data=f"username=u{i}&password=p&csrf=x".encode(), method="POST",
            headers={"X-Forwarded-For": "10.4.0.1"},
        )  # fmt: skip
        try:
            return urllib.request.urlopen(request, timeout=30).status
        except urllib.error.HTTPError as e:
            return e.code

    with ThreadPoolExecutor(20) as pool:
        statuses = set(pool.map(post, range(300)))
    assert statuses <= {400, 429}, statuses
    assert signed_in(stack, "alice", client="10.4.0.2")
    after = stack.rpc().getProcessInfo(topology.SIGNIN)
    assert after["statename"] == "RUNNING" and after["pid"] == before["pid"], "the sign-in process never restarted"


def test_the_sign_in_page_names_no_credential_and_expires_an_old_form(stack):
    form = fetch(stack.url("/login"), headers={"X-Forwarded-For": "10.5.0.1"})
    assert b'name="username"' in form.body and b'name="password"' in form.body and b'type="hidden"' in form.body
    stale = fetch(
        stack.url("/login"), method="POST", body="username=alice&password=x&csrf=old",
        headers={"X-Forwarded-For": "10.5.0.1", "Cookie": f"{CSRF_COOKIE}=other"},
    )  # fmt: skip
    assert stale.code == 400 and b"expired" in stale.body


def test_a_planted_csrf_cookie_or_a_form_from_another_origin_signs_nobody_in(stack):
    """Login CSRF: a page on the same host name at another port shares its cookies. A cookie it plants is not one
    the sign-in process signed; a pair it got from the server is refused for the form's origin."""
    client = {"X-Forwarded-For": "10.8.0.1", "Content-Type": "application/x-www-form-urlencoded"}
    planted = fetch(
        stack.url("/login"), method="POST", body="username=alice&password=" + PASSWORDS["alice"] + "&csrf=planted",
        headers={**client, "Cookie": f"{CSRF_COOKIE}=planted"},
    )  # fmt: skip
    assert planted.code == 400, "an unsigned cookie and the same value in the form"
    form = fetch(stack.url("/login"), headers={"X-Forwarded-For": "10.8.0.1"})
    pair = CookieJar()
    pair.update(form.headers.get_list("Set-Cookie"))
    token = re.search(rb'name="csrf" value="([^"]+)"', form.body).group(1).decode()
    assert token != pair.cookies[CSRF_COOKIE], "the form carries an HMAC of the cookie, not the cookie"
    body = f"username=alice&password={PASSWORDS['alice']}&csrf={token}"
    for origin in (f"http://127.0.0.1:{stack.settings.port + 1000}", "null", "https://evil.example"):
        answer = fetch(stack.url("/login"), pair, method="POST", body=body, headers={**client, "Origin": origin})
        assert answer.code == 403 and COOKIE not in str(answer.headers.get_list("Set-Cookie")), origin
    referer = {**client, "Referer": f"http://127.0.0.1:{stack.settings.port + 1}/page"}
    assert fetch(stack.url("/login"), pair, method="POST", body=body, headers=referer).code == 403
    own = {**client, "Origin": stack.url("").rstrip("/")}
    assert fetch(stack.url("/login"), pair, method="POST", body=body, headers=own).code == 303


@pytest.mark.parametrize(
    "target",
    ["/%09/evil.example", "//evil.example", "/\\evil.example", "/%0d%0aSet-Cookie:%20x=1", "https://evil.example"],
)
def test_after_sign_in_the_browser_stays_on_this_stack(stack, target):
    client = {"X-Forwarded-For": "10.9.0.1"}
    form = fetch(stack.url(f"/login?next={urllib.parse.quote(target, safe='')}"), headers=client)
    assert form.code == 200 and b'name="next" value="/"' in form.body
    jar = CookieJar()
    jar.update(form.headers.get_list("Set-Cookie"))
    token = re.search(rb'name="csrf" value="([^"]+)"', form.body).group(1).decode()
    body = urllib.parse.urlencode({"username": "alice", "password": PASSWORDS["alice"], "csrf": token, "next": target})
    headers = {**client, "Content-Type": "application/x-www-form-urlencoded"}
    answer = fetch(stack.url("/login"), jar, method="POST", body=body, headers=headers)
    assert answer.code == 303 and answer.headers["Location"] == "/", answer.headers.get("Location")


def test_a_huge_query_while_signed_out_gets_the_sign_in_page_not_an_error(stack):
    answer = fetch(stack.url("/cosine?" + "x=" + "a" * 30_000))
    assert answer.code == 303 and answer.headers["Location"] == "/login?next=%2Fcosine"


def test_the_sign_in_process_runs_as_its_own_user_with_a_key_the_workers_cannot_read(stack):
    signin_pid = stack.rpc().getProcessInfo(topology.SIGNIN)["pid"]
    worker = stack.workers()[0]
    owner = {pid: Path(f"/proc/{pid}").stat().st_uid for pid in (signin_pid, worker.pid)}
    assert owner[signin_pid] == pwd.getpwnam(plan_module.SIGNIN_USER).pw_uid != owner[worker.pid]
    environ = Path(f"/proc/{signin_pid}/environ").read_bytes().split(b"\0")
    secret = stack.plan.secret_file.read_bytes().strip()
    assert not [e for e in environ if secret in e], "the workers' secret is not handed to the sign-in process"
    key = stack.plan.signin_key_file
    assert key.stat().st_uid == owner[signin_pid] and stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_text().strip() != stack.plan.secret_file.read_text().strip()
    as_worker = privileges.become(pwd.getpwuid(owner[worker.pid]).pw_name)
    for path in (key, stack.plan.users_file, stack.plan.revoked_file):
        assert subprocess.run(["/usr/bin/test", "-r", str(path)], **as_worker).returncode == 1, path


def test_logs_are_the_stacks_groups_alone_and_keep_no_provider_code(stack):
    fetch(stack.url("/login/callback?code=SECRET-CODE&state=SECRET-STATE"))
    log_dir = stack.plan.log_dir
    assert stat.S_IMODE(log_dir.stat().st_mode) & 0o007 == 0
    logs = [p for p in log_dir.glob("*.log") if p.is_file()]
    assert logs and all(stat.S_IMODE(p.stat().st_mode) & 0o007 == 0 for p in logs), [
        (p.name, oct(p.stat().st_mode)) for p in logs
    ]
    wait_for(lambda: "/login/callback" in (log_dir / "nginx-access.log").read_text(), 10, "the access log line")
    assert "SECRET" not in (log_dir / "nginx-access.log").read_text()


def test_apply_turns_sign_in_on_and_changes_who_may_open_what_on_a_running_stack(stacks):
    running = stacks(SHIPPED_APPS, workers=1)
    assert fetch(running.url("/cosine")).code == 200

    def apply(**changes) -> str:
        settings = yaml.safe_load(running.settings_file.read_text())
        running.settings_file.write_text(yaml.safe_dump({**settings, **changes}))
        done = subprocess.run(
            [sys.executable, "-m", "bokeh_stack", "apply", "--settings", str(running.settings_file)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    said = apply(auth={"mode": "password"})
    assert f"started {topology.SIGNIN}" in said and "reloaded nginx" in said and "restarted bokeh_default" not in said
    assert fetch(running.url("/cosine")).code == 303
    assert users(running, "add", "alice", "--password-stdin", stdin=PASSWORDS["alice"] + "\n").returncode == 0
    jar = signed_in(running, "alice")
    assert fetch(running.url("/cosine"), jar).code == 200
    pid = running.rpc().getProcessInfo(topology.SIGNIN)["pid"]

    said = apply(auth={"mode": "password"}, access={"cosine": {"users": ["bob"]}})
    assert "the sign-in process read its new settings" in said
    wait_for(lambda: fetch(running.url("/cosine"), jar).code == 403, 10, "the new access rules to hold")
    assert running.rpc().getProcessInfo(topology.SIGNIN)["pid"] == pid, "no restart: signed-in users stay signed in"
    assert fetch(running.url("/random_walk"), jar).code == 200


@pytest.mark.browser
def test_in_chromium_a_page_at_another_port_cannot_sign_the_browser_in_as_its_author(stack, tmp_path):
    """The login CSRF of a page on the same host name at another port: it plants a CSRF cookie and token the
    sign-in process made for its author, and posts its author's credentials from the victim's browser."""
    from playwright.sync_api import sync_playwright

    from .test_browser import CHROMIUM_ARGS

    form = fetch(stack.url("/login"), headers={"X-Forwarded-For": "10.10.0.1"})
    pair = CookieJar()
    pair.update(form.headers.get_list("Set-Cookie"))
    token = re.search(rb'name="csrf" value="([^"]+)"', form.body).group(1).decode()
    planted = f"{CSRF_COOKIE}={pair.cookies[CSRF_COOKIE]}; path=/login"
    page = f"""<!DOCTYPE html><script>document.cookie = "{planted}";</script>
<form id="f" method="post" action="{stack.url("/login")}">
<input name="username" value="bob"><input name="password" value="{PASSWORDS["bob"]}">
<input name="csrf" value="{token}"><input name="next" value="/"></form><script>f.submit()</script>"""
    (tmp_path / "index.html").write_text(page)
    port = free_ports(1)
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:

        def served() -> bool:
            try:
                return fetch(f"http://127.0.0.1:{port}/").code == 200
            except OSError:
                return False

        wait_for(served, 10, "the other port's page")
        with sync_playwright() as p:
            chromium = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            try:
                context = chromium.new_context()
                victim = context.new_page()
                with victim.expect_response(stack.url("/login")) as posted:
                    victim.goto(f"http://127.0.0.1:{port}/")
                assert posted.value.status == 403, f"the cross-origin form answered {posted.value.status}"
                assert COOKIE not in {c["name"] for c in context.cookies()}, "signed in as the page's author"
            finally:
                chromium.close()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=10)
