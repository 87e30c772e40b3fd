"""What the X.509 and OpenID Connect logins share: single-use nonces kept in the database,
and outside identities (a grid CA's subject DN, an OIDC issuer's subject) mapped to users."""

from __future__ import annotations

import datetime as dt
import re
import secrets
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from xwvm.errors import Unauthorized, XwvmError
from xwvm.server import events
from xwvm.server.db.models import AuthNonce, Identity, User, utcnow
from xwvm.server.rights import Level
from xwvm.server.services import users as user_service

_LOGIN_CHARS = re.compile(r"[^A-Za-z0-9_.@-]+")


# Unused nonces of one kind kept at once, unless the caller says otherwise: they are made
# for anonymous callers, and each is a row.
MAX_PENDING = 10_000


def new_nonce(db: Session, kind: str, data: dict[str, Any], lifetime_s: int, *,
              max_pending: int = MAX_PENDING) -> str:
    """A fresh single-use nonce; expired ones are swept here, so unfinished logins do not
    pile up, and past ``max_pending`` unused live ones of the kind, none is made (429)."""
    now = utcnow()
    db.execute(delete(AuthNonce).where(AuthNonce.expires_at < now))
    pending = db.scalar(select(func.count()).select_from(AuthNonce).where(
        AuthNonce.kind == kind, AuthNonce.used.is_(False)))
    if pending is not None and pending >= max_pending:
        raise XwvmError(f"too many {kind} logins are in progress; retry in a few minutes",
                        code="too_many_pending", status=429)
    nonce = secrets.token_urlsafe(32)
    db.add(AuthNonce(nonce=nonce, kind=kind, data=data,
                     expires_at=now + dt.timedelta(seconds=lifetime_s)))
    return nonce


def burn_nonce(db: Session, nonce: str, kind: str) -> AuthNonce:
    """Use a nonce once: the caller commits before checking anything else, so that a
    failed attempt consumes it too."""
    taken = db.execute(update(AuthNonce)
                       .where(AuthNonce.nonce == nonce, AuthNonce.kind == kind,
                              AuthNonce.used.is_(False))
                       .values(used=True)).rowcount
    row = db.get(AuthNonce, nonce)
    if row is None or row.kind != kind:
        raise Unauthorized("unknown challenge or state: start again", code="bad_challenge")
    if not taken:
        raise Unauthorized("this challenge or state was already used (replay refused)",
                           code="challenge_replayed")
    if utcnow() > row.expires_at:
        raise Unauthorized("the challenge or state expired: start again",
                           code="challenge_expired")
    return row


def free_login(db: Session, wanted: str) -> str:
    """A login for a new outside identity: its name, made valid, suffixed if taken (an
    outside identity never takes over an existing account)."""
    base = _LOGIN_CHARS.sub("-", wanted).strip("-._@")[:100] or "user"
    login, n = base, 1
    while db.scalars(select(User.uid).where(User.login == login)).first() is not None:
        n += 1
        login = f"{base}-{n}"
    return login


def user_for_identity(db: Session, provider: str, subject: str, wanted_login: str,
                      issuer: str = "") -> User:
    """The user of an outside identity (an X.509 one is its ``issuer``'s); a new one is a
    standard user."""
    ident = db.get(Identity, (provider, issuer, subject))
    if ident is not None:
        user = db.get(User, ident.user_uid)
        if user is not None:
            return user
    user = user_service.create_user(db, None, free_login(db, wanted_login), None,
                                    Level.STANDARD)
    db.add(Identity(provider=provider, issuer=issuer, subject=subject, user_uid=user.uid))
    events.record(db, "identity_linked", object_uid=user.uid,
                  detail=f"{provider} {subject}" + (f" (issuer {issuer})" if issuer else ""))
    return user
