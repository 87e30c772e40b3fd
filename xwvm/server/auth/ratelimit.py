"""Login throttling: failed attempts counted in the database over a sliding window.

The counters are rows, not process memory, so that every server process sharing the
database sees the same count. A key is ``login:NAME`` (whether or not the account exists,
so that the answer does not reveal which logins exist) or ``addr:IP``.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from xwvm.errors import XwvmError
from xwvm.server.db.models import LoginAttempt, utcnow


class TooManyAttempts(XwvmError):
    status, code = 429, "too_many_attempts"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message, details={"retry_after_s": retry_after_s})
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Limit:
    key: str
    max_failures: int


def account_key(login: str) -> str:
    return f"login:{login[:180]}"


def address_key(address: str | None) -> str:
    return f"addr:{address or 'unknown'}"


def check(db: Session, limits: list[Limit], window_s: int,
          now: dt.datetime | None = None) -> None:
    """Refuse (429) when a key has reached its failure count within the window; the wait is
    until its oldest failure in the window leaves it."""
    now = now or utcnow()
    since = now - dt.timedelta(seconds=window_s)
    for limit in limits:
        count, oldest = db.execute(
            select(func.count(LoginAttempt.id), func.min(LoginAttempt.at))
            .where(LoginAttempt.key == limit.key, LoginAttempt.at > since)).one()
        if count >= limit.max_failures:
            oldest = oldest if oldest.tzinfo else oldest.replace(tzinfo=dt.UTC)
            wait = max(1, math.ceil((oldest - since).total_seconds()))
            what = "this account" if limit.key.startswith("login:") else "your address"
            raise TooManyAttempts(f"too many failed logins for {what}: {count} in the last "
                                  f"{window_s} s; retry in {wait} s", wait)


def record_failure(db: Session, keys: list[str], window_s: int,
                   now: dt.datetime | None = None) -> None:
    """Count one failure under each key, and forget every failure older than the window
    (the table stays as small as the attacks in progress)."""
    now = now or utcnow()
    db.execute(delete(LoginAttempt).where(
        LoginAttempt.at <= now - dt.timedelta(seconds=window_s)))
    for key in keys:
        db.add(LoginAttempt(key=key, at=now))


def clear(db: Session, key: str) -> None:
    """A successful login forgets the account's failures (not the address's)."""
    db.execute(delete(LoginAttempt).where(LoginAttempt.key == key))
