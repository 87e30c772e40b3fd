"""The background sweeper thread a serving process runs: the reaper's sweeps and the
abandoned-upload sweep, each claimed so that one process runs it per interval.

Started by the WSGI entry (``wsgi.XwvmGunicorn.load``), never by the application factory:
an application made for a test starts no thread unless the test calls :func:`start`."""

from __future__ import annotations

import logging
import threading
import time

from flask import Flask
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from xwvm.errors import XwvmError
from xwvm.server.blobs import BlobStore
from xwvm.server.config import ServerConfig
from xwvm.server.scheduler import reaper
from xwvm.server.services import uploads

log = logging.getLogger("xwvm.server")
UPLOAD_SWEEP_S = 600
# What one round may hit and survive: the database busy or gone, a blob file that cannot be
# removed, a state change refused. Anything else is a bug and ends the thread, loudly.
_ROUND_ERRORS = (sa_exc.SQLAlchemyError, OSError, XwvmError)


def sweep_once(db: Session, cfg: ServerConfig, images: BlobStore) -> None:
    """One round: each sweep that this process wins the claim for. The caller commits."""
    if reaper.claim(db, "reaper", cfg.reap_interval_s * 0.9):
        counts = reaper.sweep(db, default_wall_clock_s=cfg.default_wall_clock_s,
                              grace_s=cfg.wall_clock_grace_s)
        if any(counts.values()):
            log.info("reaper: %s", counts)
    if reaper.claim(db, "uploads", UPLOAD_SWEEP_S):
        gone = uploads.sweep_expired(db, images)
        if gone:
            log.info("removed %d abandoned uploads", gone)


def start(app: Flask) -> threading.Thread:
    """Sweep every ``reap_interval_s`` in a daemon thread for as long as the process lives."""
    cfg: ServerConfig = app.extensions["xwvm"]["config"]
    sessions = app.extensions["xwvm"]["sessions"]
    images = BlobStore(cfg.blob_dir / "images")

    def loop() -> None:
        while True:
            time.sleep(cfg.reap_interval_s)
            try:
                with sessions() as db:
                    sweep_once(db, cfg, images)
                    db.commit()
            except _ROUND_ERRORS:  # the next round retries; this one is logged
                log.exception("sweep round failed")

    thread = threading.Thread(target=loop, name="xwvm-reaper", daemon=True)
    thread.start()
    return thread
