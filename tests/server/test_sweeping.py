"""The sweeper runs where the WSGI entry starts it, never from the application factory."""

from __future__ import annotations

import threading
from pathlib import Path

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
