"""The database side of login security, in process: the sliding window of failed logins,
and single-use nonces (expired, replayed, of another kind, swept when stale)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from xwvm.errors import Unauthorized
from xwvm.server.auth import outside, ratelimit
from xwvm.server.db.engine import make_engine, make_sessionmaker, migrate
from xwvm.server.db.models import AuthNonce, LoginAttempt, utcnow

WINDOW = 60


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Session]:
    engine = make_engine(f"sqlite:///{tmp_path / 'auth.db'}")
    migrate(engine)
    with make_sessionmaker(engine)() as session:
        yield session
    engine.dispose()


def test_failures_slide_out_of_the_window(db: Session) -> None:
    t0 = utcnow()
    limits = [ratelimit.Limit("login:bob", 3, "this account")]
    for i in range(3):  # each attempt is counted (committed) as it is taken
        ratelimit.take(db, limits, WINDOW, now=t0 + dt.timedelta(seconds=i))
    ratelimit.take(db, [ratelimit.Limit("login:carol", 3, "")], WINDOW, now=t0)  # others pass
    with pytest.raises(ratelimit.TooManyAttempts) as e:
        ratelimit.take(db, limits, WINDOW, now=t0 + dt.timedelta(seconds=10))
    assert (e.value.status, e.value.retry_after_s) == (429, WINDOW - 10)
    assert db.scalar(select(func.count(LoginAttempt.id))
                     .where(LoginAttempt.key == "login:bob")) == 3  # the refused one is not
    later = t0 + dt.timedelta(seconds=WINDOW + 0.5)  # the first failure has left
    ids = ratelimit.take(db, limits, WINDOW, now=later)
    ratelimit.forget(db, ids)  # a success forgets its own attempt
    db.commit()
    ratelimit.take(db, [ratelimit.Limit("addr:10.0.0.1", 3, "")], WINDOW,
                   now=t0 + dt.timedelta(hours=1))
    assert db.scalar(select(func.count(LoginAttempt.id))) == 1  # stale rows swept


def _burn_refused(db: Session, nonce: str, kind: str, code: str) -> None:
    with pytest.raises(Unauthorized) as e:
        outside.burn_nonce(db, nonce, kind)
    assert e.value.code == code


def test_nonces_are_single_use_short_lived_and_of_one_kind(db: Session) -> None:
    nonce = outside.new_nonce(db, "x509", {"fingerprint": "f"}, 60)
    _burn_refused(db, nonce, "oidc", "bad_challenge")
    assert outside.burn_nonce(db, nonce, "x509").data == {"fingerprint": "f"}
    _burn_refused(db, nonce, "x509", "challenge_replayed")
    _burn_refused(db, "no-such-nonce", "x509", "bad_challenge")
    stale = outside.new_nonce(db, "x509", {}, 60)
    db.get(AuthNonce, stale).expires_at = utcnow() - dt.timedelta(seconds=1)
    _burn_refused(db, stale, "x509", "challenge_expired")
    outside.new_nonce(db, "oidc", {}, 60)  # sweeps the expired one
    assert db.get(AuthNonce, stale) is None
