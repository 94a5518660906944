"""Signing in with an OpenID Connect provider (settings auth.oidc): the authorization code flow with PKCE, a
nonce and a state, and the ID token's signature, issuer, audience and expiry checked (authlib's joserfc)."""

from __future__ import annotations

import base64
import json
import urllib.parse
from pathlib import Path
from typing import Any

from tornado.httpclient import AsyncHTTPClient

from bokeh_stack.daemons.signin.keys import Identity


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
