"""Signed, expiring, revocable bearer tokens.

A token is ``xwt1.<payload>.<mac>``: the payload (base64url JSON: jti, sub, exp, kind)
is signed with HMAC-SHA256 under the server secret, which lives in the database so that
every server process shares it. Revocation and the authoritative expiry are the row in
``tokens`` (a payload re-signed with a stolen secret cannot outlive its row); a session
opened with a certificate records it there, so revoking the certificate ends the session.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import logging
import secrets
from dataclasses import dataclass

from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from xwvm.errors import Unauthorized
from xwvm.server.db.models import Token, utcnow

PREFIX = "xwt1"
log = logging.getLogger("xwvm.server")


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
    db.add(Token(jti=jti, user_uid=user_uid, expires_at=expires,
                 scope_work_uid=scope_work_uid))
    payload = _b64(json.dumps({"jti": jti, "sub": user_uid, "exp": int(expires.timestamp()),
                               "kind": kind}, separators=(",", ":")).encode())
    return f"{PREFIX}.{payload}.{_mac(secret, payload)}", expires


def _claims(payload: str) -> TokenClaims:
    try:
        raw = json.loads(_unb64(payload))
        return TokenClaims(jti=str(raw["jti"]), sub=str(raw["sub"]), exp=int(raw["exp"]),
                           kind=str(raw["kind"]))
    except (ValueError, KeyError, TypeError):
        raise Unauthorized("malformed token payload", code="bad_token") from None


def decode_unverified(token: str) -> TokenClaims:
    """The claims of a token this process has just issued (no signature check)."""
    return _claims(token.split(".")[1])


def decode(secret: bytes, token: str, now: dt.datetime | None = None) -> TokenClaims:
    """Check the signature and the payload's expiry (no database access); the caller checks
    the row: revocation, and its expiry, which a forged payload cannot extend."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise Unauthorized("malformed token", code="bad_token")
    payload, mac = parts[1], parts[2]
    if not hmac.compare_digest(mac.encode(), _mac(secret, payload).encode()):
        raise Unauthorized("token signature is not valid", code="bad_token")
    claims = _claims(payload)
    if (now or utcnow()).timestamp() >= claims.exp:
        raise Unauthorized("token expired: log in again", code="token_expired")
    return claims


def bind_certificate(db: Session, token: str, issuer: str, serial: str) -> None:
    """Record on a token just issued in this session the certificate (issuer DN, serial in
    hex) it was obtained with."""
    row = db.get(Token, decode_unverified(token).jti)
    if row is not None:
        row.auth_issuer, row.auth_serial = issuer, serial


def revoke_certificate(db: Session, issuer: str, serial: str) -> int:
    """End every session opened with this certificate; how many."""
    return db.execute(update(Token).where(Token.auth_issuer == issuer,
                                          Token.auth_serial == serial,
                                          Token.revoked.is_(False))
                      .values(revoked=True)).rowcount


def revoke(db: Session, jti: str) -> None:
    tok = db.get(Token, jti)
    if tok is not None:
        tok.revoked = True


def revoke_at_once(db: Session, jti: str) -> None:
    """Revoke in a transaction of its own, committed now: the request that found the
    reason is refused, and a refused request's own transaction is rolled back."""
    try:
        with Session(bind=db.get_bind()) as own:
            own.execute(update(Token).where(Token.jti == jti).values(revoked=True))
            own.commit()
    except SQLAlchemyError:  # still refused this time, and found again on the next request
        log.exception("could not record the revocation of token %s", jti)


def revoke_scope(db: Session, work_uid: str) -> None:
    """End every credential delegated for this VM job."""
    db.query(Token).filter(Token.scope_work_uid == work_uid).update({"revoked": True})


def revoke_all(db: Session, user_uid: str) -> None:
    db.query(Token).filter(Token.user_uid == user_uid).update({"revoked": True})
