"""The Flask application factory."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from typing import Any

from flask import Flask, g, jsonify, request
from sqlalchemy import exc as sa_exc
from sqlalchemy import select
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from xwvm.errors import XwvmError
from xwvm.protocol.paths import API_PREFIX
from xwvm.server import api, events, sweeping
from xwvm.server.blobs import BlobStore, StorageFull
from xwvm.server.config import ServerConfig
from xwvm.server.db.engine import make_engine, make_sessionmaker, read_only
from xwvm.server.db.models import Setting

log = logging.getLogger("xwvm.server")


def create_app(config: ServerConfig) -> Flask:
    """The application over ``config``'s initialized database. It starts no thread: the
    serving entry starts the sweeper (``xwvm.server.sweeping.start``)."""
    app = Flask("xwvm.server")
    app.config["MAX_CONTENT_LENGTH"] = config.max_upload_bytes
    engine = make_engine(config.db_url)
    sessions = make_sessionmaker(engine)
    with sessions() as db:
        row = db.scalars(select(Setting).where(Setting.name == "token_secret")).first()
        if row is None:
            raise RuntimeError(f"database {config.db_url} is not initialized: "
                               "run 'xwvm server init' first")
        secret = bytes.fromhex(row.value)
    app.extensions["xwvm"] = {"config": config, "engine": engine, "sessions": sessions,
                              "blobs": BlobStore(config.blob_dir), "secret": secret}
    api.register(app)
    _errors(app)

    @app.before_request
    def _mark_read_only() -> None:
        g.ro_token = read_only.set(request.method in ("GET", "HEAD"))

    app.after_request(_drain)

    @app.teardown_request
    def _close(_exc: BaseException | None) -> None:
        session = g.pop("db", None)
        if session is not None:
            session.rollback()
            session.close()
        token = g.pop("ro_token", None)
        if token is not None:
            read_only.reset(token)

    @app.get(f"{API_PREFIX}/health")
    def health() -> Any:
        # This process's last sweep that raised nothing (null: none yet, or no sweeper).
        last = app.extensions["xwvm"].get(sweeping.LAST_SWEEP)
        return jsonify(ok=True, version=_version(), last_sweep=last and last.isoformat())

    return app


def _drain(resp: Any) -> Any:
    """A refusal (DRAINED) answered before the request's body was read (a chunk at the
    wrong offset, a 507): read the rest (at most DRAIN_MAX bytes for DRAIN_S seconds) so the client
    reads the answer instead of a reset connection, which it would take for an outage and
    retry."""
    length = request.content_length
    if resp.status_code in DRAINED and length and length <= DRAIN_MAX:
        deadline = time.monotonic() + DRAIN_S  # a client trickling its body holds no thread
        with contextlib.suppress(Exception):
            while time.monotonic() < deadline and request.stream.read(4096):
                pass
    return resp


def _version() -> str:
    from xwvm import __version__
    return __version__


def _errors(app: Flask) -> None:
    @app.errorhandler(XwvmError)
    def _xwvm(err: XwvmError) -> Any:
        _log_refusal(app, err)
        return jsonify(err.to_json()), err.status

    @app.errorhandler(HTTPException)
    def _http(err: HTTPException) -> Any:
        code = (err.name or "error").lower().replace(" ", "_")
        message = err.description
        if isinstance(err, RequestEntityTooLarge):  # name the sizes, as TooLarge does
            code = "too_large"
            size = (f"of {request.content_length} bytes" if request.content_length is not None
                    else "(streamed without a Content-Length)")
            message = (f"request body {size} exceeds the limit of "
                       f"{request.max_content_length} bytes")
        headers = [(k, v) for k, v in err.get_headers() if k.lower() != "content-type"]
        return jsonify(error=code, message=message), err.code or 500, headers  # keep Allow

    @app.errorhandler(StorageFull)
    def _full(err: StorageFull) -> Any:
        return _storage_full(err.message, err)

    @app.errorhandler(sa_exc.OperationalError)
    def _db_down(err: sa_exc.OperationalError) -> Any:
        if _db_full(err):
            return _storage_full(DB_FULL, err)
        log.warning("database error: %s", err)
        return jsonify(error="database_unavailable",
                       message="the database is busy or unreachable; retry later"), 503


DRAIN_MAX = 16 * 2**20  # twice a template upload's chunk
DRAIN_S = 2.0
# Refusals of a well-formed upload that the client streams in full (a chunk at the wrong
# offset, a full disk); never a 401 (anonymous callers hold no thread) nor a 413.
DRAINED = frozenset({409, 507})
DB_FULL = "the server's database is full: the request was not stored"
_PG_DISK_FULL = "53100"  # SQLSTATE disk_full (psycopg's errors.DiskFull)


def _db_full(err: sa_exc.DBAPIError) -> bool:
    """The database said its disk is full: SQLite's SQLITE_FULL, PostgreSQL's 53100."""
    orig = err.orig
    if getattr(orig, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
        return True
    return _PG_DISK_FULL in (getattr(orig, "sqlstate", None), getattr(orig, "pgcode", None))


def _storage_full(message: str, err: Exception) -> Any:
    """507 for a disk the server cannot write: the request's transaction is rolled back,
    the administrator told (error level, with the cause), and the server serves on. No
    refusal event is written: the database may be on the full disk."""
    session = g.get("db")
    if session is not None:
        with contextlib.suppress(sa_exc.SQLAlchemyError):  # the teardown tries once more
            session.rollback()
    cause = err.__cause__ or getattr(err, "orig", None) or err
    log.error("%s %s: storage full: %s (%s)", request.method, request.path, message, cause)
    return jsonify(error=StorageFull.code, message=message), StorageFull.status


# Event kinds for refusals that have a name of their own; every other one is "refused".
_REFUSAL_KINDS = {"illegal_transition": "transition_refused", "bad_credentials": "login_refused",
                  "too_many_attempts": "login_refused"}


def _log_refusal(app: Flask, err: XwvmError) -> None:
    """Every refused request becomes an event, written in a transaction of its own (the
    request's own transaction is rolled back, so it cannot carry the event)."""
    details = err.details if isinstance(err.details, dict) else {}
    principal = g.get("principal")
    request_session = g.get("db")
    if request_session is not None:
        request_session.rollback()  # drop its changes and, on SQLite, its write lock
    login = g.get("login_attempt")  # set by /auth/login; the body is never re-read here
    who = f" (login {login!r})" if login else ""
    try:
        with app.extensions["xwvm"]["sessions"]() as db:
            events.record(db, _REFUSAL_KINDS.get(err.code, "refused"),
                          object_uid=(request.view_args or {}).get("uid"),
                          actor_uid=principal.uid if principal else None,
                          from_status=details.get("from"), to_status=details.get("to"),
                          detail=f"{request.method} {request.path}: {err.status} {err.code}: "
                                 f"{err.message}{who}")
            db.commit()
    except sa_exc.SQLAlchemyError:  # the refusal itself is still answered
        log.exception("could not log a refused request")
