"""`xwvm server init`: data directory, configuration, database, CA and first admin; and
the check, before anything else opens them, that a data directory was initialized."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
from pathlib import Path

from sqlalchemy import inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from xwvm.errors import BadRequest, Conflict, NotFound
from xwvm.protocol import GUEST_SERVER_NAME
from xwvm.server import config as server_config
from xwvm.server import datadir, pki
from xwvm.server.db.engine import make_engine, make_sessionmaker, migrate
from xwvm.server.db.models import Setting
from xwvm.server.rights import Level
from xwvm.server.services import users as user_service


def init(data_dir: Path, admin_password: str, *, db_url: str | None = None,
         admin_login: str = "admin", hostnames: list[str] | None = None,
         **settings: object) -> server_config.ServerConfig:
    # Everything made here (SQLite's file, keys, server.yaml) is private from its creation.
    data_dir = Path(os.path.abspath(data_dir))
    before = set(data_dir.iterdir()) if data_dir.is_dir() else None
    old_umask = os.umask(datadir.UMASK)
    try:
        return _init(data_dir, admin_password, db_url=db_url, admin_login=admin_login,
                     hostnames=hostnames, **settings)
    except SQLAlchemyError as e:
        _undo(data_dir, before)
        raise BadRequest(f"cannot initialize the database {_shown(db_url)}: "
                         f"{_reason(e)}", code="bad_database") from None
    except BaseException:
        _undo(data_dir, before)
        raise
    finally:
        os.umask(old_umask)


def _undo(data_dir: Path, before: set[Path] | None) -> None:
    """Remove what a failed init made in the data directory (all of it if init made it),
    never what was there before."""
    if before is None:
        shutil.rmtree(data_dir, ignore_errors=True)
        return
    for path in set(data_dir.iterdir()) - before if data_dir.is_dir() else ():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _shown(db_url: str | None) -> str:
    """A database URL fit to print: its password hidden."""
    if not db_url:
        return "(SQLite in the data directory)"
    try:
        return make_url(db_url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - it is only shown; load() refuses a bad URL
        return "(the given URL)"


def _reason(e: SQLAlchemyError) -> str:
    """The driver's own first line (``role "xwvm" does not exist``), not SQLAlchemy's
    statement dump."""
    orig = getattr(e, "orig", None)
    text = str(orig if orig is not None else e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _init(data_dir: Path, admin_password: str, *, db_url: str | None, admin_login: str,
          hostnames: list[str] | None, **settings: object) -> server_config.ServerConfig:
    datadir.private_dir(data_dir)
    if (data_dir / server_config.CONFIG_FILE).exists():
        raise Conflict(f"{data_dir} is already initialized (it has {server_config.CONFIG_FILE})",
                       code="exists")
    cfg = server_config.load(data_dir, db_url=db_url, **settings)
    engine = make_engine(cfg.db_url)
    migrate(engine)
    sessions = make_sessionmaker(engine)
    with sessions() as db:
        if db.get(Setting, "token_secret") is not None:
            raise Conflict(f"database {_shown(cfg.db_url)} is already initialized",
                           code="exists")
        db.add(Setting(name="token_secret", value=secrets.token_hex(32)))
        user_service.create_user(db, None, admin_login, admin_password, Level.SUPER)
        db.commit()
    engine.dispose()
    names = hostnames or ["localhost", "127.0.0.1", "::1", socket.gethostname()]
    if GUEST_SERVER_NAME not in names:
        names = [*names, GUEST_SERVER_NAME]  # how VM guests name the server (see appliance)
    ca, ca_key = pki.make_ca(data_dir, cfg.public_name)
    pki.issue_server_cert(data_dir, ca, ca_key, names)
    datadir.private_dir(cfg.blob_dir)
    server_config.save(cfg)
    datadir.tighten(data_dir, datadir.sqlite_files(cfg.db_url))
    return cfg


def initialized(data_dir: Path, db_url: str | None = None) -> server_config.ServerConfig:
    """The configuration of an initialized data directory, read without creating or
    migrating anything: refused, naming what is missing, when the directory has no
    server.yaml, its SQLite file is absent, or its database holds no server (no token
    secret) or cannot be reached."""
    data_dir = Path(os.path.abspath(data_dir))
    hint = f"run 'xwvm server init --data-dir {data_dir}' first"
    if not (data_dir / server_config.CONFIG_FILE).is_file():
        raise NotFound(f"{data_dir} is not an initialized xwvm data directory (it has no "
                       f"{server_config.CONFIG_FILE}): {hint}", code="not_initialized")
    cfg = server_config.load(data_dir, db_url=db_url)
    files = datadir.sqlite_files(cfg.db_url)
    if files and not files[0].is_file():
        raise NotFound(f"the database file {files[0]} does not exist (db_url; a relative "
                       f"path in {server_config.CONFIG_FILE} is relative to the data "
                       f"directory): {hint}", code="not_initialized")
    if files and files[0].stat().st_size == 0:  # SQLite would write a header into it
        raise NotFound(f"the database file {files[0]} is empty: {hint}",
                       code="not_initialized")
    _require_server_in(cfg.db_url, hint)
    return cfg


def _require_server_in(db_url: str, hint: str) -> None:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            found = inspect(conn).has_table(Setting.__tablename__) and conn.execute(
                select(Setting.value).where(Setting.name == "token_secret")).first()
    except SQLAlchemyError as e:
        raise BadRequest(f"cannot open the database {_shown(db_url)}: {_reason(e)}",
                         code="bad_database") from None
    finally:
        engine.dispose()
    if not found:
        raise NotFound(f"the database {_shown(db_url)} holds no xwvm server: {hint}",
                       code="not_initialized")
