"""An OpenID Connect provider for the sign-in tests: oidc-provider-mock (PyPI), which speaks discovery and the
authorization code flow but does not check PKCE, with PKCE checked on top as a provider must (RFC 7636, S256):
the code challenge of each authorization request is kept by the code it yields, and the token request for that
code is refused unless its code_verifier hashes to it. Every verdict goes to stderr ("PKCE ...").

    python tests/oidc/provider.py PORT USERS_JSON   (USERS_JSON: [{"sub": ..., "preferred_username": ..., ...}])
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sys
import urllib.parse

import flask
import uvicorn
from oidc_provider_mock import app as provider_app
from oidc_provider_mock._storage import User


def with_pkce(app: flask.Flask) -> flask.Flask:
    challenges: dict[str, tuple[str, str]] = {}

    @app.after_request
    def keep_challenge(response: flask.Response) -> flask.Response:
        if flask.request.path == "/oauth2/authorize" and response.status_code in (302, 303):
            code = urllib.parse.parse_qs(urllib.parse.urlsplit(response.headers["Location"]).query).get("code")
            if code:
                args = flask.request.args
                challenges[code[0]] = (args.get("code_challenge", ""), args.get("code_challenge_method", ""))
        return response

    @app.before_request
    def check_verifier():
        if flask.request.path != "/oauth2/token" or flask.request.form.get("grant_type") != "authorization_code":
            return None
        challenge, method = challenges.pop(flask.request.form.get("code", ""), ("", ""))
        verifier = flask.request.form.get("code_verifier", "")
        digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if method != "S256" or not challenge or not verifier or digest != challenge:
            print(f"PKCE refused: method {method!r}, challenge {bool(challenge)}, verifier {bool(verifier)}",
                  file=sys.stderr, flush=True)  # fmt: skip
            return flask.jsonify(error="invalid_grant", error_description="PKCE verification failed"), 400
        print("PKCE verified (S256)", file=sys.stderr, flush=True)
        return None

    return app


def main(port: int, users_json: str) -> None:
    os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"  # plain http on loopback
    users = [User(sub=u["sub"], claims={k: v for k, v in u.items() if k != "sub"}) for u in json.loads(users_json)]
    app = with_pkce(provider_app(require_client_registration=True, require_nonce=True, user_claims=users))
    uvicorn.run(app, interface="wsgi", host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
