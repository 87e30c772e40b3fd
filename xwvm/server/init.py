"""`xwvm server init`: data directory, configuration, database, CA and first admin."""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path

from xwvm.errors import Conflict
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
    old_umask = os.umask(datadir.UMASK)
    try:
        return _init(Path(data_dir), admin_password, db_url=db_url, admin_login=admin_login,
                     hostnames=hostnames, **settings)
    finally:
        os.umask(old_umask)


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
            raise Conflict(f"database {cfg.db_url} is already initialized", code="exists")
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
