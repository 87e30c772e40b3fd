"""A full disk under the real server (a small tmpfs filled up): the request is answered
507 storage_full, nothing half-written stays (no partial blob, no row), the server goes on
serving, and the same request works once space is freed."""

from __future__ import annotations

import hashlib
import os
import pwd
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.postgres import PostgresServer
from tests.support.processes import ServerProcess
from tests.support.tmpfs import fill, tmpfs
from xwvm.client.sdk import Client
from xwvm.server.db.engine import make_engine, make_sessionmaker
from xwvm.server.db.models import Data, Work

KiB, MiB = 1024, 1024 * 1024
DB_FULL = "the server's database is full: the request was not stored"


def _call(server: ServerProcess, c: Client, method: str, path: str,
          **kw: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {c.token}", **kw.pop("headers", {})}
    return requests.request(method, f"{server.url}/api/v1{path}", headers=headers,
                            verify=str(server.ca), timeout=30, **kw)


def _storage_full(resp: requests.Response) -> str:
    assert resp.status_code == 507, (resp.status_code, resp.text)
    body = resp.json()
    assert body["error"] == "storage_full", body
    return body["message"]


def _files(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*") if p.is_file()}


def _healthy(server: ServerProcess) -> None:
    resp = requests.get(f"{server.url}/api/v1/health", verify=str(server.ca), timeout=10)
    assert resp.status_code == 200 and resp.json()["ok"] is True


@pytest.fixture
def blob_full(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server whose blob store is a 4 MiB tmpfs (its database is on the ordinary disk)."""
    srv = ServerProcess(tmp_path).init()
    with tmpfs(srv.data_dir / "blobs", 4 * KiB):
        srv.start()
        try:
            yield srv
        finally:
            srv.stop()


def test_data_upload_on_a_full_blob_store(blob_full: ServerProcess) -> None:
    admin = blob_full.client()
    blobs = blob_full.data_dir / "blobs"
    data = admin.post("/data", {"name": "big.bin"})
    rows = len(admin.list_data())
    before = _files(blobs)
    filler = fill(blobs, leave=256 * KiB)
    content = os.urandom(MiB)
    resp = _call(blob_full, admin, "PUT", f"/data/{data['uid']}/content", data=content)
    assert _storage_full(resp) == ("the server's blob store is full: the 1048576 bytes of "
                                   f"data {data['uid']} not stored")
    assert _files(blobs) == before | {Path("filler")}, "the partial blob was removed"
    after = admin.get_data(data["uid"])
    assert (after["status"], after["size"], after["sha256"]) == ("pending", None, None)
    assert len(admin.list_data()) == rows
    _healthy(blob_full)
    assert "storage full: the server's blob store is full" in blob_full.log
    filler.unlink()
    resp = _call(blob_full, admin, "PUT", f"/data/{data['uid']}/content", data=content)
    assert resp.status_code == 200, resp.text
    assert resp.json()["sha256"] == hashlib.sha256(content).hexdigest()
    assert admin.download_data(data["uid"], blob_full.root / "got").read_bytes() == content


def test_template_chunk_on_a_full_blob_store(blob_full: ServerProcess) -> None:
    admin = blob_full.client()
    content = os.urandom(MiB)
    up = admin.post("/uploads", {"size": len(content),
                                 "sha256": hashlib.sha256(content).hexdigest()})
    part = blob_full.data_dir / "blobs" / "images" / "uploads" / f"{up['uid']}.part"
    filler = fill(blob_full.data_dir / "blobs", leave=256 * KiB)
    chunk = {"Content-Range": f"bytes 0-{len(content) - 1}/{len(content)}"}
    resp = _call(blob_full, admin, "PUT", f"/uploads/{up['uid']}", data=content, headers=chunk)
    assert _storage_full(resp) == ("the server's blob store is full: 1048576 bytes of upload "
                                   f"{up['uid']} (at offset 0) not stored")
    assert part.stat().st_size == 0, "the chunk's bytes were dropped"
    assert admin.get(f"/uploads/{up['uid']}")["received"] == 0
    _healthy(blob_full)
    filler.unlink()
    resp = _call(blob_full, admin, "PUT", f"/uploads/{up['uid']}", data=content, headers=chunk)
    assert resp.status_code == 200 and resp.json()["received"] == len(content), resp.text
    done = _call(blob_full, admin, "POST", f"/uploads/{up['uid']}/complete")
    assert done.status_code == 200 and done.json()["status"] == "complete", done.text
    assert not part.exists()


def test_result_archive_on_a_full_blob_store(blob_full: ServerProcess) -> None:
    """A job's result upload creates its data object in the request's transaction: a
    full disk leaves no such row, and the job keeps no result."""
    admin = blob_full.client()
    engine = make_engine(f"sqlite:///{blob_full.data_dir / 'xwvm.db'}")
    sessions = make_sessionmaker(engine)
    try:
        with sessions() as db:  # a job held by a host (the super user may act as its worker)
            work = Work(owner_uid=admin.whoami()["uid"], access_rights=0o700,
                        status="RUNNING", command="true")
            db.add(work)
            db.commit()
            rows = db.query(Data).count()
        filler = fill(blob_full.data_dir / "blobs", leave=256 * KiB)
        content = os.urandom(MiB)
        resp = _call(blob_full, admin, "PUT", f"/works/{work.uid}/result", data=content)
        assert _storage_full(resp) == ("the server's blob store is full: the result archive "
                                       f"of job {work.uid} (1048576 bytes) not stored")
        with sessions() as db:
            assert db.query(Data).count() == rows, "the result's data row was rolled back"
            assert db.query(Work).filter_by(uid=work.uid).one().result_data_uid is None
        _healthy(blob_full)
        filler.unlink()
        resp = _call(blob_full, admin, "PUT", f"/works/{work.uid}/result", data=content)
        assert resp.status_code == 200, resp.text
        with sessions() as db:
            assert db.query(Work).filter_by(uid=work.uid).one().result_data_uid is not None
    finally:
        engine.dispose()


def _truncate_wal(db: Path) -> None:
    """Checkpoint the server's WAL into the database and cut it to 0 bytes, so that the
    next commit has to grow it (a WAL rewrites its old frames in place, needing no room)."""
    conn = sqlite3.connect(db)
    try:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0
    finally:
        conn.close()
    assert Path(f"{db}-wal").stat().st_size == 0


def test_a_full_sqlite_database(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path)
    with tmpfs(srv.data_dir, 32 * KiB):
        srv.init().start()
        try:
            _database_full_then_freed(srv, srv.data_dir)
        finally:
            srv.stop()


@pytest.mark.postgres
def test_a_full_postgresql_tablespace(postgres: PostgresServer, tmp_path: Path) -> None:
    """The server's database in a tablespace on a small tmpfs: PostgreSQL's own
    "could not extend file" (SQLSTATE 53100, psycopg's DiskFull) becomes 507."""
    import psycopg
    pw = pwd.getpwnam("postgres")
    name = f"full_{uuid.uuid4().hex[:8]}"
    with tmpfs(postgres.root / name, 16 * KiB, owner=(pw.pw_uid, pw.pw_gid)) as disk:
        with psycopg.connect(postgres.admin_url, autocommit=True) as conn:
            conn.execute(f"CREATE TABLESPACE {name} LOCATION '{disk}'")
            conn.execute(f"CREATE DATABASE {name} TABLESPACE {name}")
        srv = ServerProcess(tmp_path, db_url=postgres.url(name)).init().start()
        try:
            _database_full_then_freed(srv, disk)
        finally:
            srv.stop()
            with psycopg.connect(postgres.admin_url, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE {name} WITH (FORCE)")
                conn.execute(f"DROP TABLESPACE {name}")


def _database_full_then_freed(srv: ServerProcess, disk: Path) -> None:
    admin = srv.client()
    names = {d["name"] for d in admin.list_data()}
    if srv.db_url is None:
        _truncate_wal(srv.data_dir / "xwvm.db")
    filler = fill(disk)
    answers = []
    for i in range(500):  # the first commit that needs a new page fails
        resp = _call(srv, admin, "POST", "/data", json={"name": f"full-{i}"})
        answers.append(resp)
        if resp.status_code != 201:
            break
    assert _storage_full(answers[-1]) == DB_FULL
    names |= {f"full-{i}" for i in range(len(answers) - 1)}
    assert {d["name"] for d in admin.list_data()} == names, "the refused row is not there"
    _healthy(srv)
    assert f"storage full: {DB_FULL}" in srv.log
    filler.unlink()
    resp = _call(srv, admin, "POST", "/data", json={"name": "after"})
    assert resp.status_code == 201, resp.text
    assert {d["name"] for d in admin.list_data()} == names | {"after"}
