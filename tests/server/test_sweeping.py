"""The sweeper runs where the WSGI entry starts it, never from the application factory."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy.orm import Session

from xwvm.server import init as server_init
from xwvm.server import sweeping
from xwvm.server.app import create_app
from xwvm.server.blobs import BlobStore


def _sweepers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "xwvm-reaper"]


def test_an_app_made_for_a_test_starts_no_thread(tmp_path: Path) -> None:
    cfg = server_init.init(tmp_path / "srv", "admin-password-1", hostnames=["localhost"])
    before = set(threading.enumerate())
    app = create_app(cfg)
    assert set(threading.enumerate()) - before == set()
    app.extensions["xwvm"]["engine"].dispose()


def test_one_round_sweeps_and_a_started_sweeper_runs(tmp_path: Path) -> None:
    cfg = server_init.init(tmp_path / "srv", "admin-password-1", hostnames=["localhost"])
    app = create_app(cfg)
    sessions = app.extensions["xwvm"]["sessions"]
    with sessions() as db:
        sweeping.sweep_once(db, cfg, BlobStore(cfg.blob_dir / "images"))
        db.commit()
    cfg.reap_interval_s = 3600.0  # its first round would come after this test's end
    thread = sweeping.start(app)
    assert thread.is_alive() and thread.daemon and thread in _sweepers()
    app.extensions["xwvm"]["engine"].dispose()


class _FailingSessions:
    """The application's session factory (SQLAlchemy's), made to raise a non-database
    error on its first ``failures`` calls: a round that hits a bug."""

    def __init__(self, app: Flask, failures: int) -> None:
        self.ext = app.extensions["xwvm"]
        self.real, self.failures, self.calls = self.ext["sessions"], failures, 0
        self.ext["sessions"] = self

    def __call__(self) -> Session:
        self.calls += 1
        if self.calls <= self.failures:
            raise RuntimeError(f"bug in round {self.calls}")
        self.ext["config"].reap_interval_s = 3600.0  # the good round is the last one soon
        return self.real()


def _app(tmp_path: Path, interval: float) -> Flask:
    cfg = server_init.init(tmp_path / "srv", "admin-password-1", hostnames=["localhost"])
    cfg.reap_interval_s = interval
    return create_app(cfg)


def test_a_round_that_raises_does_not_end_the_sweeper(tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    app = _app(tmp_path, 0.05)
    _FailingSessions(app, failures=1)
    with caplog.at_level(logging.ERROR, logger="xwvm.server"):
        thread = sweeping.start(app)
        deadline = time.monotonic() + 20
        while sweeping.LAST_SWEEP not in app.extensions["xwvm"] and time.monotonic() < deadline:
            time.sleep(0.05)
    assert thread.is_alive()
    assert sweeping.LAST_SWEEP in app.extensions["xwvm"], "no round succeeded after the bug"
    failed = [r for r in caplog.records if "sweep round failed" in r.getMessage()]
    assert failed and failed[0].exc_info is not None  # logged with its traceback
    assert "bug in round 1" in caplog.text
    app.extensions["xwvm"]["engine"].dispose()


def test_failed_rounds_back_off_and_a_good_one_resets(tmp_path: Path) -> None:
    app = _app(tmp_path, 10.0)
    sessions = _FailingSessions(app, failures=3)
    waits: list[float] = []
    sweeping.run(app, sleep=waits.append, rounds=5)
    assert sessions.calls == 5
    # 10 s, then doubled after each of the three failures; the good round resets the wait
    # to the (now changed) interval.
    assert waits == [10.0, 20.0, 40.0, 80.0, 3600.0]
    app.extensions["xwvm"]["engine"].dispose()


def test_health_tells_the_last_good_sweep(tmp_path: Path) -> None:
    app = _app(tmp_path, 10.0)
    health = app.test_client().get("/api/v1/health").get_json()
    assert health["ok"] is True and health["last_sweep"] is None
    before = dt.datetime.now(dt.UTC)
    sweeping.run(app, sleep=lambda _s: None, rounds=1)
    last = dt.datetime.fromisoformat(app.test_client().get("/api/v1/health")
                                     .get_json()["last_sweep"])
    assert before <= last <= dt.datetime.now(dt.UTC)
    app.extensions["xwvm"]["engine"].dispose()
