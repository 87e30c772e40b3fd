"""Engine and session setup for SQLite (embedded default) and PostgreSQL, and migrations."""

from __future__ import annotations

import contextvars
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"

# Set by the HTTP layer for GET/HEAD: on SQLite those transactions need no write lock.
read_only = contextvars.ContextVar("xwvm_read_only", default=False)


def normalize_url(url: str) -> str:
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def make_engine(url: str, **kw: Any) -> Engine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False},
                               **kw)
        _sqlite_setup(engine)
        return engine
    kw.setdefault("pool_size", 10)
    kw.setdefault("max_overflow", 20)
    # No pre-ping (a SELECT 1 per checkout): a dropped connection fails its request with
    # 503 (OperationalError) and the pool replaces it; recycle old connections instead.
    kw.setdefault("pool_recycle", 1800)
    # psycopg prepares a statement after 5 runs, and PostgreSQL then switches to a generic
    # plan that cannot see that "status = 'PENDING'" is selective: the scheduler's owner
    # query went from 0.1 ms to 12 ms (docs/benchmarks.md). Custom plans cost ~0.1 ms of
    # planning per statement and keep every query on the plan its values deserve.
    connect_args = kw.pop("connect_args", {})
    connect_args.setdefault("options", "-c plan_cache_mode=force_custom_plan")
    return create_engine(url, connect_args=connect_args, **kw)


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _rec: Any) -> None:
        # Let SQLAlchemy (below) emit BEGIN itself, so writers can take the lock up front.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        # BEGIN IMMEDIATE: a transaction that may write takes the write lock at its start,
        # so it never fails later on a read-to-write upgrade and assignments are serialized.
        conn.exec_driver_sql("BEGIN" if read_only.get() else "BEGIN IMMEDIATE")


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


def alembic_config(engine: Engine) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine) -> None:
    """Bring the database schema to the newest revision."""
    command.upgrade(alembic_config(engine), "head")
