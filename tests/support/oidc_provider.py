"""A real OpenID Connect provider on loopback, built with authlib's server side
(authorization code + PKCE + OpenID Connect), with in-memory clients, codes and users.

``mode`` makes it misbehave as a test asks: "wrong_audience" issues ID tokens for another
client; "bad_signature" signs them with a key its JWKS does not publish."""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import ClientMixin, grants
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import UserInfo
from authlib.oidc.core.grants import OpenIDCode
from flask import Flask, jsonify, request
from joserfc.jwk import RSAKey
from werkzeug.serving import make_server

from tests.support.postgres import free_port


@dataclass
class Client(ClientMixin):
    client_id: str
    client_secret: str

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return None

    def get_allowed_scope(self, scope: str) -> str:
        allowed = {"openid", "profile", "email"}
        return " ".join(s for s in (scope or "").split() if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        # RFC 8252: a native client's loopback redirect may use any port.
        return redirect_uri.startswith(("http://127.0.0.1:", "http://localhost:"))

    def check_client_secret(self, client_secret: str) -> bool:
        return secrets.compare_digest(client_secret, self.client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code"


@dataclass
class Code:
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user: str
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    auth_time: int = field(default_factory=lambda: int(time.time()))

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time

    def get_acr(self) -> None:
        return None

    def get_amr(self) -> None:
        return None


class Provider:
    def __init__(self, client_id: str = "xwvm", client_secret: str | None = None) -> None:
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.client = Client(client_id, client_secret or secrets.token_urlsafe(24))
        self.key = RSAKey.generate_key(2048, parameters={"kid": "k1"}, private=True)
        self.rogue_key = RSAKey.generate_key(2048, parameters={"kid": "k1"}, private=True)
        self.codes: dict[str, Code] = {}
        self.user = "alice"  # who is "logged in" at the provider (consent is automatic)
        self.mode = "normal"
        self.app = self._app()
        self._server = make_server("127.0.0.1", self.port, self.app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> Provider:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()

    def _app(self) -> Flask:
        app = Flask("test-oidc-provider")
        provider = self
        server = AuthorizationServer(app, query_client=lambda cid: (
            provider.client if cid == provider.client.client_id else None),
            save_token=lambda token, req: None)
        server.register_grant(_code_grant(self), [_id_token(self)(require_nonce=True),
                                                  CodeChallenge(required=True)])
        _routes(app, server, self)
        _ = request  # the endpoints read it through authlib
        return app


def _code_grant(provider: Provider) -> type[grants.AuthorizationCodeGrant]:
    """The authorization-code grant, its codes kept in ``provider.codes``."""
    class CodeGrant(grants.AuthorizationCodeGrant):
        TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

        def save_authorization_code(self, code: str, req: Any) -> None:
            data = req.payload.data
            provider.codes[code] = Code(
                code, req.client.client_id, req.payload.redirect_uri, req.scope,
                req.user, data.get("nonce"), data.get("code_challenge"),
                data.get("code_challenge_method"))

        def query_authorization_code(self, code: str, client: Client) -> Code | None:
            item = provider.codes.get(code)
            return item if item and item.client_id == client.client_id else None

        def delete_authorization_code(self, authorization_code: Code) -> None:
            provider.codes.pop(authorization_code.code, None)

        def authenticate_user(self, authorization_code: Code) -> str:
            return authorization_code.user
    return CodeGrant


def _id_token(provider: Provider) -> type[OpenIDCode]:
    """The OpenID extension: ID tokens as ``provider.mode`` (mis)signs and addresses them."""
    class IdToken(OpenIDCode):
        def exists_nonce(self, nonce: str, req: Any) -> bool:
            return any(c.nonce == nonce for c in provider.codes.values())

        def get_client_algorithm(self, client: Client) -> str:
            return "RS256"

        def get_encode_header(self, client: Client) -> dict[str, str]:
            return {"alg": "RS256", "kid": "k1"}

        def resolve_client_private_key(self, client: Client) -> Any:
            return provider.rogue_key if provider.mode == "bad_signature" \
                else provider.key

        def get_client_claims(self, client: Client) -> dict[str, Any]:
            aud = "another-client" if provider.mode == "wrong_audience" \
                else client.client_id
            return {"iss": provider.issuer, "aud": [aud],
                    "exp": int(time.time()) + 300}

        def generate_user_info(self, user: str, scope: str) -> UserInfo:
            return UserInfo(sub=f"sub-{user}", preferred_username=user,
                            email=f"{user}@example.org")
    return IdToken


def _routes(app: Flask, server: AuthorizationServer, provider: Provider) -> None:
    """Discovery, keys, authorize (the provider's user consents at once) and token."""
    @app.get("/.well-known/openid-configuration")
    def discovery() -> Any:
        return jsonify(issuer=provider.issuer,
                       authorization_endpoint=f"{provider.issuer}/authorize",
                       token_endpoint=f"{provider.issuer}/token",
                       jwks_uri=f"{provider.issuer}/jwks",
                       response_types_supported=["code"],
                       subject_types_supported=["public"],
                       id_token_signing_alg_values_supported=["RS256"],
                       code_challenge_methods_supported=["S256"])

    @app.get("/jwks")
    def jwks() -> Any:
        return jsonify(keys=[provider.key.as_dict(private=False)])

    @app.get("/authorize")
    def authorize() -> Any:
        try:
            grant = server.get_consent_grant(end_user=provider.user)
        except OAuth2Error as error:
            return server.handle_error_response(None, error)
        return server.create_authorization_response(grant_user=provider.user,
                                                    grant=grant)

    @app.post("/token")
    def token() -> Any:
        return server.create_token_response()
