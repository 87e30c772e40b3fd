"""The background sweeper thread a serving process runs: the reaper's sweeps and the
abandoned-upload sweep, each claimed so that one process runs it per interval.

Started by the WSGI entry (``wsgi.XwvmGunicorn.load``), never by the application factory:
an application made for a test starts no thread unless the test calls :func:`start`."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

from flask import Flask
from sqlalchemy.orm import Session

from xwvm.protocol.retry import Backoff
from xwvm.server.blobs import BlobStore
from xwvm.server.config import ServerConfig
from xwvm.server.db.models import utcnow
from xwvm.server.scheduler import reaper
from xwvm.server.services import uploads

log = logging.getLogger("xwvm.server")
UPLOAD_SWEEP_S = 600
#: Where the thread notes the end of its last round that raised nothing (UTC), for /health.
LAST_SWEEP = "last_sweep"
#: After a failed round the next waits longer, doubling up to this many intervals, so a
#: database that is gone is not hammered; one good round brings the interval back.
MAX_BACKOFF_INTERVALS = 16
#: A gap between sweeps longer than this many intervals means no server process ran.
OUTAGE_INTERVALS = 4


def sweep_once(db: Session, cfg: ServerConfig, images: BlobStore) -> None:
    """One round: each sweep that this process wins the claim for. The caller commits."""
    previous = reaper.claim(db, "reaper", cfg.reap_interval_s * 0.9)
    if previous is not None:
        down_s = (utcnow() - previous).total_seconds() - cfg.reap_interval_s
        if down_s > OUTAGE_INTERVALS * cfg.reap_interval_s:
            log.warning("no sweep for %.0f s (the server was down?): hosts' silence "
                        "meanwhile not counted", down_s)
            reaper.forgive_outage(db, down_s)
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
    thread = threading.Thread(target=run, args=(app,), name="xwvm-reaper", daemon=True)
    thread.start()
    return thread


def run(app: Flask, sleep: Callable[[float], object] = time.sleep,
        rounds: int | None = None) -> None:
    """The thread's loop: wait, sweep, and on to the next round whatever a round raised (it
    is logged with its traceback; the wait doubles after each failure). ``rounds``: stop
    after that many (None: never), for tests."""
    cfg: ServerConfig = app.extensions["xwvm"]["config"]
    waits = _waits(cfg.reap_interval_s)
    while rounds is None or rounds > 0:
        sleep(next(waits))
        if _round(app):
            waits = _waits(cfg.reap_interval_s)
        if rounds is not None:
            rounds -= 1


def _round(app: Flask) -> bool:
    """One round in its own session; True if it raised nothing."""
    ext = app.extensions["xwvm"]
    cfg: ServerConfig = ext["config"]
    try:
        with ext["sessions"]() as db:
            sweep_once(db, cfg, BlobStore(cfg.blob_dir / "images"))
            db.commit()
    except Exception:  # a bug or an outage: logged, and the sweeper lives on
        log.exception("sweep round failed; the next round retries")
        return False
    ext[LAST_SWEEP] = utcnow()
    return True


def _waits(interval: float) -> Iterator[float]:
    return Backoff(first=interval, cap=interval * MAX_BACKOFF_INTERVALS, attempts=None).delays()
