"""Alembic migrations: a populated database upgrades to head; models and schema agree."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, text

from tests.support.postgres import PostgresServer
from xwvm.server.db.engine import alembic_config, make_engine
from xwvm.server.db.models import Base

ROWS = [
    "INSERT INTO users (uid, login, rights, enabled, owner_uid, access_rights, created_at)"
    " VALUES ('u1', 'alice', 10, true, 'u1', 448, '2026-01-01 00:00:00')",
    "INSERT INTO apps (uid, name, kind, owner_uid, access_rights, created_at)"
    " VALUES ('a1', 'hello', 'native', 'u1', 493, '2026-01-01 00:00:00')",
    "INSERT INTO hosts (uid, name, worker_user_uid, os, arch, cpus, memory_mb, disk_mb,"
    " shared_apps, hypervisors, version, status, alive_period, registered_at, last_seen)"
    " VALUES ('h1', 'w', 'u1', 'linux', 'x86_64', 1, 1, 1, '[]', '{}', '', 'alive', 60,"
    " '2026-01-01 00:00:00', '2026-01-01 00:00:00')",
    "INSERT INTO works (uid, app_uid, status, args, env, retries, max_retries, min_memory_mb,"
    " min_cpus, min_disk_mb, owner_uid, access_rights, submitted_at)"
    " VALUES ('w1', 'a1', 'PENDING', '[]', '{}', 0, 10, 0, 0, 0, 'u1', 493,"
    " '2026-01-01 00:00:00')",
    # worker accounts made before every worker was confined (0010): one by a standard
    # user, one by a group admin in group g1, one by a super user
    "INSERT INTO users (uid, login, rights, enabled, owner_uid, access_rights, created_at)"
    " VALUES ('s1', 'root', 50, true, 's1', 448, '2026-01-01 00:00:00')",
    "INSERT INTO users (uid, login, rights, enabled, owner_uid, access_rights, created_at)"
    " VALUES ('wu', 'w-user', 20, true, 'u1', 448, '2026-01-01 00:00:00')",
    "INSERT INTO users (uid, login, rights, enabled, owner_uid, group_uid, access_rights,"
    " created_at) VALUES ('wg', 'w-group', 20, true, 'u1', 'g1', 448, '2026-01-01 00:00:00')",
    "INSERT INTO users (uid, login, rights, enabled, owner_uid, access_rights, created_at)"
    " VALUES ('ws', 'w-super', 20, true, 's1', 448, '2026-01-01 00:00:00')",
]


def _upgrade_populated(engine: Engine) -> None:
    cfg = alembic_config(engine)
    command.upgrade(cfg, "0001")
    with engine.begin() as conn:
        for row in ROWS:
            conn.execute(text(row))
    command.upgrade(cfg, "0011")  # 0012 drops vm_capable again: look at it before
    with engine.connect() as conn:
        assert conn.execute(text("SELECT status, network FROM works")).one() == \
            ("PENDING", "server")
        assert conn.execute(text("SELECT vm_capable FROM hosts")).scalar() in (False, 0)
        # 0008: an existing host is owned by its worker account's owner, visible (755)
        assert tuple(conn.execute(text("SELECT owner_uid, access_rights FROM hosts")).one()) \
            == ("u1", 0o755)
        # 0010: workers made by non-super users are confined (group first, else their
        # maker); a super user's unconfined worker stays public
        assert sorted(tuple(r) for r in conn.execute(text(
            "SELECT uid, confine_user_uid, confine_group_uid FROM users WHERE rights = 20"))) \
            == [("wg", None, "g1"), ("ws", None, None), ("wu", "u1", None)]
    command.upgrade(cfg, "head")
    command.downgrade(cfg, "0008")  # identities came with 0007; 0009 records their issuer
    with engine.begin() as conn:
        for provider, subject in (("x509", "CN=carol,O=grid"), ("https://idp", "sub-1")):
            conn.execute(text("INSERT INTO identities (provider, subject, user_uid, created_at)"
                              " VALUES (:p, :s, 'u1', '2026-01-01 00:00:00')"),
                         {"p": provider, "s": subject})
    command.upgrade(cfg, "head")
    with engine.connect() as conn:
        # an X.509 identity of unknown issuer is marked, an OIDC one needs none
        assert sorted(tuple(r) for r in conn.execute(
            text("SELECT provider, issuer FROM identities"))) == \
            [("https://idp", ""), ("x509", "?")]
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == [], f"models and migrations disagree: {diff}"


def test_sqlite_upgrade_from_first_revision(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    _upgrade_populated(engine)
    engine.dispose()


@pytest.mark.postgres
def test_postgres_upgrade_from_first_revision(postgres: PostgresServer) -> None:
    engine = make_engine(postgres.create_database("migrations"))
    _upgrade_populated(engine)
    engine.dispose()
