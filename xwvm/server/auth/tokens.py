"""Signed, expiring, revocable bearer tokens.

A token is ``xwt1.<payload>.<mac>``: the payload (base64url JSON: jti, sub, exp, kind)
is signed with HMAC-SHA256 under the server secret, which lives in the database so that
every server process shares it. Revocation is a row in ``tokens``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass

from sqlalchemy.orm import Session

from xwvm.errors import Unauthorized
from xwvm.server.db.models import Token, utcnow

PREFIX = "xwt1"


@dataclass(frozen=True)
class TokenClaims:
    jti: str
    sub: str
    exp: int
    kind: str


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, payload: str) -> str:
    return _b64(hmac.new(secret, f"{PREFIX}.{payload}".encode(), hashlib.sha256).digest())


def issue(db: Session, secret: bytes, user_uid: str, lifetime_s: int,
          kind: str = "session", scope_work_uid: str | None = None) -> tuple[str, dt.datetime]:
    now = utcnow()
    expires = now + dt.timedelta(seconds=lifetime_s)
    jti = secrets.token_hex(16)
    db.add(Token(jti=jti, user_uid=user_uid, kind=kind, issued_at=now, expires_at=expires,
                 scope_work_uid=scope_work_uid))
    payload = _b64(json.dumps({"jti": jti, "sub": user_uid, "exp": int(expires.timestamp()),
                               "kind": kind}, separators=(",", ":")).encode())
    return f"{PREFIX}.{payload}.{_mac(secret, payload)}", expires


def decode(secret: bytes, token: str, now: dt.datetime | None = None) -> TokenClaims:
    """Check the signature and expiry (no database access); revocation is checked by the caller."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise Unauthorized("malformed token", code="bad_token")
    payload, mac = parts[1], parts[2]
    if not hmac.compare_digest(mac.encode(), _mac(secret, payload).encode()):
        raise Unauthorized("token signature is not valid", code="bad_token")
    try:
        raw = json.loads(_unb64(payload))
        claims = TokenClaims(jti=str(raw["jti"]), sub=str(raw["sub"]), exp=int(raw["exp"]),
                             kind=str(raw["kind"]))
    except (ValueError, KeyError, TypeError):
        raise Unauthorized("malformed token payload", code="bad_token") from None
    if (now or utcnow()).timestamp() >= claims.exp:
        raise Unauthorized("token expired: log in again", code="token_expired")
    return claims


def revoke(db: Session, jti: str) -> None:
    tok = db.get(Token, jti)
    if tok is not None:
        tok.revoked = True


def revoke_scope(db: Session, work_uid: str) -> None:
    """End every credential delegated for this VM job."""
    db.query(Token).filter(Token.scope_work_uid == work_uid).update({"revoked": True})


def revoke_all(db: Session, user_uid: str) -> None:
    db.query(Token).filter(Token.user_uid == user_uid).update({"revoked": True})
