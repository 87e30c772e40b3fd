"""OpenID Connect login: the server is the OIDC client of one configured issuer
(authorization code flow with PKCE; the CLI catches the code on a loopback redirect).

1. ``start``: the CLI gives its loopback redirect URI and a PKCE code challenge; the server
   keeps them with a fresh ``state`` and ID-token ``nonce`` (single use, in the database)
   and answers the issuer's authorization URL.
2. ``finish``: the CLI gives the state, the code and its PKCE verifier; the server burns
   the state (a replay is refused), checks the verifier against the challenge, redeems the
   code with its client secret and the verifier, and checks the ID token: signature by a
   key of the issuer's JWKS, issuer, audience (this client), expiry and nonce. The issuer's
   subject maps to a local user, created at standard level on its first login.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy.orm import Session

from xwvm.errors import BadRequest, NotFound, Unauthorized, XwvmError
from xwvm.server.auth import outside
from xwvm.server.config import ServerConfig
from xwvm.server.db.models import AuthNonce, User
from xwvm.server.services import users as user_service

_PKCE = re.compile(r"^[A-Za-z0-9._~-]{43,128}\Z")
_LEEWAY_S = 60
_TIMEOUT_S = 15


class ProviderError(XwvmError):
    status, code = 502, "oidc_provider_error"


def _refuse(message: str, code: str) -> Unauthorized:
    return Unauthorized(message, code=code)


def _is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Provider:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str


def _verify(cfg: ServerConfig) -> str | bool:
    return cfg.oidc_ca_file or True


def _get_json(cfg: ServerConfig, url: str) -> dict[str, Any]:
    try:
        resp = requests.get(url, timeout=_TIMEOUT_S, verify=_verify(cfg))
        resp.raise_for_status()
        return resp.json()
    except (requests.RequestException, ValueError) as e:
        raise ProviderError(f"the OpenID provider did not answer {url}: {e}") from None


# Discovery documents by issuer, with when to fetch again: an anonymous /auth/oidc/start
# must not make an outbound request each time. A failure is remembered briefly too.
_discovered: dict[str, tuple[float, Provider | XwvmError]] = {}
_discovered_lock = threading.Lock()
_FAILURE_CACHE_S = 30


def provider(cfg: ServerConfig) -> Provider:
    """The configured issuer's endpoints, from its discovery document (cached for
    ``oidc_discovery_cache_s``)."""
    key = f"{cfg.oidc_issuer}|{cfg.oidc_client_id}"
    with _discovered_lock:
        until, known = _discovered.get(key, (0.0, None))
        if known is None or time.monotonic() >= until:
            try:
                known, keep = _discover(cfg), cfg.oidc_discovery_cache_s
            except (ProviderError, BadRequest) as e:
                known, keep = e, _FAILURE_CACHE_S
            _discovered[key] = (time.monotonic() + keep, known)
    if isinstance(known, XwvmError):  # a fresh one: the cached one may be in flight
        raise type(known)(known.message, code=known.code)
    return known


def _discover(cfg: ServerConfig) -> Provider:
    if not (cfg.oidc_issuer and cfg.oidc_client_id):
        raise NotFound("OpenID Connect login is not configured on this server",
                       code="oidc_disabled")
    issuer = cfg.oidc_issuer.rstrip("/")
    parts = urlsplit(issuer)
    if parts.scheme != "https" and not (parts.scheme == "http" and _is_loopback(parts.hostname)):
        raise BadRequest(f"OIDC issuer {issuer} must use https", code="bad_config")
    doc = _get_json(cfg, f"{issuer}/.well-known/openid-configuration")
    if doc.get("issuer", "").rstrip("/") != issuer:
        raise ProviderError(f"the discovery document names issuer {doc.get('issuer')!r}, "
                            f"not {issuer}")
    try:
        return Provider(issuer, doc["authorization_endpoint"], doc["token_endpoint"],
                        doc["jwks_uri"])
    except KeyError as e:
        raise ProviderError(f"the discovery document lacks {e}") from None


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()) \
        .rstrip(b"=").decode()


def start(db: Session, cfg: ServerConfig, redirect_uri: str,
          code_challenge: str) -> dict[str, str]:
    """Anonymous: the caller throttles it per address first; the checks that cost nothing
    come before the provider's (cached) discovery and the state row, and the states kept
    at once are capped (``oidc_max_pending``)."""
    if not (cfg.oidc_issuer and cfg.oidc_client_id):
        provider(cfg)  # says "not configured"
    parts = urlsplit(redirect_uri)
    if parts.scheme != "http" or not _is_loopback(parts.hostname) or not parts.port:
        raise BadRequest("the redirect URI must be a loopback one, http://127.0.0.1:PORT/...",
                         code="bad_redirect_uri")
    if not _PKCE.match(code_challenge):
        raise BadRequest("the PKCE code challenge must be 43-128 base64url characters",
                         code="bad_code_challenge")
    prov = provider(cfg)
    nonce = secrets.token_urlsafe(32)
    state = outside.new_nonce(db, "oidc", {"redirect_uri": redirect_uri,
                                           "code_challenge": code_challenge, "nonce": nonce},
                              cfg.oidc_state_s, max_pending=cfg.oidc_max_pending)
    query = urlencode({"response_type": "code", "client_id": cfg.oidc_client_id,
                       "redirect_uri": redirect_uri, "scope": cfg.oidc_scopes,
                       "state": state, "nonce": nonce, "code_challenge": code_challenge,
                       "code_challenge_method": "S256"})
    sep = "&" if "?" in prov.authorization_endpoint else "?"
    return {"authorization_url": f"{prov.authorization_endpoint}{sep}{query}",
            "state": state}


def _redeem(cfg: ServerConfig, prov: Provider, row: AuthNonce, code: str,
            verifier: str) -> str:
    try:
        resp = requests.post(prov.token_endpoint, timeout=_TIMEOUT_S, verify=_verify(cfg),
                             auth=(cfg.oidc_client_id, cfg.oidc_client_secret),
                             data={"grant_type": "authorization_code", "code": code,
                                   "redirect_uri": row.data["redirect_uri"],
                                   "code_verifier": verifier})
    except requests.RequestException as e:
        raise ProviderError(f"the OpenID provider's token endpoint failed: {e}") from None
    try:
        body = resp.json()
    except ValueError:
        body = {}
    if resp.status_code != 200:
        raise _refuse(f"the OpenID provider refused the code: "
                      f"{body.get('error', resp.status_code)} "
                      f"{body.get('error_description', '')}".strip(), "oidc_code_refused")
    if not isinstance(body.get("id_token"), str):
        raise ProviderError("the OpenID provider returned no ID token")
    return body["id_token"]


def check_id_token(cfg: ServerConfig, prov: Provider, id_token: str,
                   nonce: str) -> dict[str, Any]:
    keys = KeySet.import_key_set(_get_json(cfg, prov.jwks_uri))
    try:
        token = jwt.decode(id_token, keys, algorithms=["RS256", "ES256", "PS256", "EdDSA"])
    except JoseError as e:
        raise _refuse(f"the ID token's signature is not valid ({e.error}): it was not "
                      "signed by the issuer's keys", "oidc_bad_signature") from None
    except ValueError as e:
        raise _refuse(f"the ID token is malformed: {e}", "oidc_bad_token") from None
    claims = token.claims
    if str(claims.get("iss", "")).rstrip("/") != prov.issuer:
        raise _refuse(f"the ID token's issuer {claims.get('iss')!r} is not {prov.issuer}",
                      "oidc_wrong_issuer")
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else list(aud or [])
    if cfg.oidc_client_id not in audiences or (
            len(audiences) > 1 and claims.get("azp") != cfg.oidc_client_id):
        raise _refuse(f"the ID token is for audience {aud!r}, not this server "
                      f"({cfg.oidc_client_id})", "oidc_wrong_audience")
    now = time.time()
    if not isinstance(claims.get("exp"), int | float) or claims["exp"] + _LEEWAY_S < now:
        raise _refuse("the ID token expired", "oidc_token_expired")
    if isinstance(claims.get("iat"), int | float) and claims["iat"] - _LEEWAY_S > now:
        raise _refuse("the ID token was issued in the future", "oidc_bad_token")
    if not secrets.compare_digest(str(claims.get("nonce", "")), nonce):
        raise _refuse("the ID token's nonce is not the one of this login", "oidc_bad_nonce")
    if not claims.get("sub"):
        raise _refuse("the ID token has no subject", "oidc_bad_token")
    return claims


def finish(db: Session, cfg: ServerConfig, secret: bytes, row: AuthNonce, code: str,
           verifier: str) -> tuple[str, User, object]:
    """After ``outside.burn_nonce`` on the state (committed): PKCE, code, ID token, user."""
    if not _PKCE.match(verifier) or not secrets.compare_digest(
            _s256(verifier), str(row.data.get("code_challenge", ""))):
        raise _refuse("the PKCE code verifier does not match this login's challenge",
                      "oidc_pkce_mismatch")
    prov = provider(cfg)
    claims = check_id_token(cfg, prov, _redeem(cfg, prov, row, code, verifier),
                            str(row.data.get("nonce", "")))
    wanted = str(claims.get("preferred_username") or
                 str(claims.get("email", "")).split("@")[0] or "oidc-user")
    user = outside.user_for_identity(db, prov.issuer, str(claims["sub"]), wanted)
    return user_service.session_for(db, secret, user, cfg.token_lifetime_s,
                                    cfg.worker_token_lifetime_s, how=f"oidc {prov.issuer}")
