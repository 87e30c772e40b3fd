"""Login throttling: attempts counted in the database over a sliding window.

The counters are rows, not process memory, so that every server process sharing the
database sees the same count. An attempt is counted *before* it is judged, in a committed
transaction of its own, and then refused if the count including it is over a limit: two
concurrent attempts cannot both see the count before the other (a check-then-record pair
let 6 of 25 concurrent guesses through a limit of 5).

Keys: ``pair:ADDRESS|LOGIN`` (an attacker's guesses lock the account for the attacker's
address only), ``addr:ADDRESS`` (guessing across accounts), ``login:LOGIN`` (guessing from
many addresses; a high limit, since anyone can push it, and never held against an
address that has not failed for that account: the real user is not locked out). A login
is counted whether or not
the account exists, so that the answer does not reveal which logins exist. ``oidc:ADDRESS``
counts anonymous OpenID Connect starts.
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
    what: str  # for the refusal: "this account from your address", ...
    # Waived for an attempt whose key here has no failure in the window: the account's
    # limit does not refuse an address that has not guessed this account, so that
    # anyone's guesses from many addresses cannot lock the real user out; each fresh
    # address buys a distributed guesser one more guess, then its own pair is counted.
    waived_unless: str | None = None


def pair_key(login: str, address: str | None) -> str:
    return f"pair:{address or 'unknown'}|{login[:128]}"


def account_key(login: str) -> str:
    return f"login:{login[:180]}"


def address_key(address: str | None) -> str:
    return f"addr:{address or 'unknown'}"


def oidc_key(address: str | None) -> str:
    """Anonymous OpenID Connect starts, counted like login attempts."""
    return f"oidc:{address or 'unknown'}"


def take(db: Session, limits: list[Limit], window_s: int,
         now: dt.datetime | None = None) -> list[int]:
    """Count one attempt under every limit's key and commit, then refuse it (429, its rows
    removed again) if a key now holds more than its limit within the window. Returns the
    attempt's row ids: a failed attempt keeps them, a successful one calls ``forget``.

    Commits ``db``: call it before anything else of the request is in the session."""
    now = now or utcnow()
    since = now - dt.timedelta(seconds=window_s)
    db.rollback()
    db.execute(delete(LoginAttempt).where(LoginAttempt.at <= since))
    rows = [LoginAttempt(key=lim.key, at=now) for lim in limits]
    db.add_all(rows)
    db.commit()
    ids = [row.id for row in rows]
    for lim in limits:
        if lim.waived_unless is not None and not db.scalar(
                select(func.count(LoginAttempt.id)).where(
                    LoginAttempt.key == lim.waived_unless, LoginAttempt.at > since,
                    LoginAttempt.id.not_in(ids))):
            continue
        count = db.scalar(select(func.count(LoginAttempt.id)).where(
            LoginAttempt.key == lim.key, LoginAttempt.at > since))
        if count is not None and count > lim.max_failures:
            wait = _wait(db, lim, since, ids, count - 1)
            forget(db, ids)
            db.commit()
            raise TooManyAttempts(f"too many login attempts for {lim.what}: {count - 1} in "
                                  f"the last {window_s} s; retry in {wait} s", wait)
    return ids


def _wait(db: Session, lim: Limit, since: dt.datetime, own: list[int], others: int) -> int:
    """Seconds until enough of the other attempts leave the window for one more to fit:
    the (others - max + 1)-th oldest of them must go."""
    at = db.scalar(select(LoginAttempt.at)
                   .where(LoginAttempt.key == lim.key, LoginAttempt.at > since,
                          LoginAttempt.id.not_in(own))
                   .order_by(LoginAttempt.at, LoginAttempt.id)
                   .offset(max(0, others - lim.max_failures)).limit(1))
    if at is None:
        return 1
    at = at if at.tzinfo else at.replace(tzinfo=dt.UTC)
    return max(1, math.ceil((at - since).total_seconds()))


def forget(db: Session, ids: list[int]) -> None:
    """Remove an attempt's rows (it succeeded, or it was refused before being judged)."""
    db.execute(delete(LoginAttempt).where(LoginAttempt.id.in_(ids)))


def clear(db: Session, key: str) -> None:
    """A successful login forgets the failures of its (account, address) pair; the
    address's and the account's own counts run out with the window."""
    db.execute(delete(LoginAttempt).where(LoginAttempt.key == key))
