"""Sign-in with OpenID Connect (auth.mode oidc), end to end in Chromium: the stack, and a provider the test starts
on loopback (oidc-provider-mock, with PKCE checked on top: tests/oidc/provider.py). Sign-in, callback, cookie and a
page view with its websocket all go over real HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest

from bokeh_stack.daemons.signin.gate import COOKIE
from harness.stack import fetch, free_ports, wait_for
from tests.test_browser import CHROMIUM_ARGS, DOCUMENT_READY
from tests.test_stack import SHIPPED_APPS

pytestmark = [pytest.mark.stack, pytest.mark.browser, pytest.mark.usefixtures("nginx_available")]
playwright = pytest.importorskip("playwright.sync_api")

PROVIDER = Path(__file__).parent / "oidc" / "provider.py"
DANA = {"sub": "d-4711", "preferred_username": "dana", "groups": ["lab"]}


def request(url: str, data: dict | None = None, headers: dict | None = None, json_body: dict | None = None):
    """(status, headers, body) of a GET, or a POST of a form (data) or of JSON, without following redirects."""
    try:
        if json_body is None and data is None:
            answer = fetch(url, headers=headers or {})
        else:
            kind = "application/json" if json_body is not None else "application/x-www-form-urlencoded"
            body = json.dumps(json_body) if json_body is not None else urllib.parse.urlencode(data)
            answer = fetch(url, method="POST", body=body, headers={**(headers or {}), "Content-Type": kind})
    except OSError:
        return 0, {}, b""  # not listening (yet)
    return answer.code, answer.headers, answer.body


@pytest.fixture
def provider(tmp_path):
    port = free_ports(1)
    log = tmp_path / "provider.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(PROVIDER), str(port), json.dumps([DANA])],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    issuer = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: request(f"{issuer}/.well-known/openid-configuration")[0] == 200, 30, "the OIDC provider")
        yield issuer, log
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def register(issuer: str, redirect_uri: str) -> dict:
    status, _, body = request(
        f"{issuer}/oauth2/clients",
        json_body={"redirect_uris": [redirect_uri], "token_endpoint_auth_method": "client_secret_basic"},
    )
    assert status == 201, body
    return json.loads(body)


def test_sign_in_with_openid_connect_in_chromium(stacks, provider, tmp_path):
    issuer, provider_log = provider
    port = free_ports(4)
    client = register(issuer, f"http://localhost:{port}/login/callback")
    secret_file = tmp_path / "client_secret"
    secret_file.write_text(client["client_secret"] + "\n")
    secret_file.chmod(0o644)  # this test's throwaway secret: the sign-in process runs as another user
    stack = stacks(
        SHIPPED_APPS, workers=1, port=port, ops={"port": port + 1}, base_port=port + 2,
        auth={"mode": "oidc", "oidc": {"issuer": issuer, "client_id": client["client_id"],
                                       "client_secret_file": str(secret_file)}},
        access={"cosine": {"groups": ["lab"]}, "streaming": {"users": ["someone-else"]}},
    )  # fmt: skip
    base = f"http://localhost:{port}"

    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            context = chromium.new_context()
            page = context.new_page()
            authorize: list[str] = []
            page.on("request", lambda r: authorize.append(r.url) if "/oauth2/authorize" in r.url else None)
            page.goto(f"{base}/cosine")
            page.locator(f"button[name=sub][value='{DANA['sub']}']").click()  # the provider's sign-in
            page.wait_for_url(f"{base}/cosine", timeout=20_000)
            page.wait_for_function(DOCUMENT_READY, timeout=20_000)
            assert page.evaluate("() => Bokeh.documents[0].roots().length") > 0, "the page's websocket works"

            query = urllib.parse.parse_qs(urllib.parse.urlsplit(authorize[0]).query)
            assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43
            assert query["redirect_uri"] == [f"{base}/login/callback"] and "nonce" in query
            assert not any("code_verifier" in url for url in authorize), "the verifier is in no URL"
            assert "PKCE verified (S256)" in provider_log.read_text()

            [cookie] = [c for c in context.cookies() if c["name"] == COOKIE]
            assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
            page.goto(f"{base}/")
            assert "Signed in as dana" in page.inner_text("header")
            listed = {a.get_attribute("href") for a in page.locator("a.card").all()}
            assert "/cosine" in listed and "/streaming" not in listed, "dana is in lab, not someone-else"
            assert page.goto(f"{base}/streaming").status == 403

            page.goto(f"{base}/press_me")
            page.wait_for_function(DOCUMENT_READY, timeout=20_000)
            page.get_by_text("Signed in as dana").wait_for(timeout=10_000)  # the app greets the signed-in user
        finally:
            chromium.close()
    stack.stop()


def test_the_test_provider_refuses_a_code_without_its_pkce_verifier(provider):
    """What makes the Chromium test prove the stack's PKCE: this provider refuses a wrong verifier."""
    issuer, provider_log = provider
    redirect_uri = "http://localhost:1/login/callback"
    client = register(issuer, redirect_uri)
    query = {
        "response_type": "code", "client_id": client["client_id"], "redirect_uri": redirect_uri,
        "scope": "openid", "state": "s", "nonce": "n", "code_challenge_method": "S256",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",  # RFC 7636's example: verifier dBjftJeZ4CVP...
    }  # fmt: skip
    status, headers, _ = request(f"{issuer}/oauth2/authorize?{urllib.parse.urlencode(query)}", data={"sub": "x"})
    assert status in (302, 303)
    code = urllib.parse.parse_qs(urllib.parse.urlsplit(headers["Location"]).query)["code"][0]
    status, _, body = request(
        f"{issuer}/oauth2/token",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
              "code_verifier": "not-the-verifier-" + "x" * 40},
        headers={"Authorization": "Basic " + _basic(client)},
    )  # fmt: skip
    assert status == 400 and b"PKCE" in body
    assert "PKCE refused" in provider_log.read_text()


def _basic(client: dict) -> str:
    import base64

    return base64.b64encode(f"{client['client_id']}:{client['client_secret']}".encode()).decode()
