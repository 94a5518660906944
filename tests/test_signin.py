"""Sign-in (auth.mode password) and per-app access, against one real stack: nginx asks the sign-in process about
every index, app page, autoload.js and websocket; users are managed with `bokeh-stack users`."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml
from bokeh.util.token import get_token_payload
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.web import create_signed_value
from tornado.websocket import websocket_connect

from bokeh_stack import signin
from bokeh_stack.identity import USER_HEADER
from harness.pageview import _TOKEN, CookieJar, page_view, sign_in, websocket_url
from harness.stack import fetch, run, start_stack, wait_for
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
    cookie = next(h for h in response.headers.get_list("Set-Cookie") if h.startswith(signin.COOKIE))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie, cookie

    page = fetch(stack.url("/press_me"), jar)
    assert page.code == 200 and page.headers["Cache-Control"] == "no-store"
    assert jar.cookies[signin.COOKIE] not in page.body.decode()
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
    assert run(connect(bob)) is None, "bob's cookie with alice's token: the worker closes it"
    assert run(connect(alice)) is not None, "alice's own token and cookie: the ACK"


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
    log = (stack.plan.log_dir / f"{signin.PROGRAM}.log").read_text()
    assert "failed sign-in as 'nobody-here' from 10.2.0.1" in log


def test_a_removed_user_is_signed_out_at_once(stack):
    jar = signed_in(stack, "carol")
    assert fetch(stack.url("/"), jar).code == 200
    removed = users(stack, "remove", "carol")
    assert removed.returncode == 0 and "removed" in removed.stdout
    assert fetch(stack.url("/"), jar).code == 303
    listed = users(stack, "list").stdout
    assert "carol" not in listed and "bob  groups: lab" in listed
    assert "$argon2id$" in stack.plan.users_file.read_text() and "password" not in stack.plan.users_file.read_text()


def test_logout_ends_the_sign_in(stack):
    jar = signed_in(stack, "alice")
    assert fetch(stack.url("/"), jar).code == 200
    out = fetch(stack.url("/logout"), jar)
    assert out.code == 303 and out.headers["Location"] == "/login"
    jar.update(out.headers.get_list("Set-Cookie"))  # as the browser does
    assert fetch(stack.url("/"), jar).code == 303


def test_a_trusted_proxys_https_makes_the_sign_in_cookie_secure(stack):
    https = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "10.3.0.1"}
    _, _, response = run(sign_in(stack.url("").rstrip("/"), "alice", PASSWORDS["alice"], https))
    assert "Secure" in next(h for h in response.headers.get_list("Set-Cookie") if h.startswith(signin.COOKIE))


def test_bad_cookies_and_a_form_flood_are_answered_cleanly(stack):
    before = stack.rpc().getProcessInfo(signin.PROGRAM)
    key = signin.cookie_key(stack.plan.secret_file.read_text().strip())
    value = json.dumps({"u": "alice", "g": []})
    day = 24 * 3600
    cookies = {
        "forged": "2|1:0|10:1700000000|18:bokeh_stack_signin|8:eyJ1IjoxfQ==|" + "0" * 64,
        "another key": create_signed_value(b"another key", signin.COOKIE, value).decode(),
        "expired": create_signed_value(key, signin.COOKIE, value, clock=lambda: time.time() - day).decode(),
        "not json": create_signed_value(key, signin.COOKIE, "][").decode(),
    }
    for what, cookie in cookies.items():
        answer = fetch(stack.url("/cosine"), headers={"Cookie": f"{signin.COOKIE}={cookie}"})
        assert answer.code == 303, f"a {what} cookie: HTTP {answer.code}"
    huge = fetch(stack.url("/cosine"), headers={"Cookie": f"{signin.COOKIE}={'a' * 100_000}"})
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
    after = stack.rpc().getProcessInfo(signin.PROGRAM)
    assert after["statename"] == "RUNNING" and after["pid"] == before["pid"], "the sign-in process never restarted"


def test_the_sign_in_page_names_no_credential_and_expires_an_old_form(stack):
    form = fetch(stack.url("/login"), headers={"X-Forwarded-For": "10.5.0.1"})
    assert b'name="username"' in form.body and b'name="password"' in form.body and b'type="hidden"' in form.body
    stale = fetch(
        stack.url("/login"), method="POST", body="username=alice&password=x&csrf=old",
        headers={"X-Forwarded-For": "10.5.0.1", "Cookie": f"{signin.CSRF_COOKIE}=other"},
    )  # fmt: skip
    assert stale.code == 400 and b"expired" in stale.body


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
    assert f"started {signin.PROGRAM}" in said and "reloaded nginx" in said and "restarted bokeh_default" not in said
    assert fetch(running.url("/cosine")).code == 303
    assert users(running, "add", "alice", "--password-stdin", stdin=PASSWORDS["alice"] + "\n").returncode == 0
    jar = signed_in(running, "alice")
    assert fetch(running.url("/cosine"), jar).code == 200
    pid = running.rpc().getProcessInfo(signin.PROGRAM)["pid"]

    said = apply(auth={"mode": "password"}, access={"cosine": {"users": ["bob"]}})
    assert "the sign-in process read its new settings" in said
    wait_for(lambda: fetch(running.url("/cosine"), jar).code == 403, 10, "the new access rules to hold")
    assert running.rpc().getProcessInfo(signin.PROGRAM)["pid"] == pid, "no restart: signed-in users stay signed in"
    assert fetch(running.url("/random_walk"), jar).code == 200
