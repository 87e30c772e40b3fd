"""`xwvm server init|run` and paths: a data directory given relatively works from any
folder (the same database), and one `server init` did not make is refused untouched."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import requests
import yaml

from tests.support.postgres import free_port
from tests.support.processes import ADMIN_PASSWORD, XWVM, run_cli
from xwvm.client.sdk import Client


def _init(cwd: Path, data_dir: str, *extra: str) -> subprocess.CompletedProcess[str]:
    (cwd / "admin.pw").write_text(ADMIN_PASSWORD)
    return run_cli(["server", "init", "--data-dir", data_dir, "--admin-password-file",
                    "admin.pw", *extra], cwd / "cfg", cwd=cwd, check=False)


def _serve(cwd: Path, data_dir: str, ca: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`xwvm server run --data-dir DATA_DIR` started in ``cwd``; its URL once it answers."""
    port = free_port()
    proc = subprocess.Popen([*XWVM, "server", "run", "--data-dir", data_dir, "--bind",
                             f"127.0.0.1:{port}", "--workers", "1"], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    url = f"https://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        try:
            requests.get(f"{url}/api/v1/health", verify=str(ca), timeout=2)
            return proc, url
        except requests.RequestException:
            time.sleep(0.2)
    _stop(proc)
    raise AssertionError(f"server run from {cwd} did not answer (exit {proc.returncode})")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def _groups_in(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM usergroups")}


def test_init_stores_absolute_paths(tmp_path: Path) -> None:
    here = tmp_path / "a"
    here.mkdir()
    proc = _init(here, "srv")
    assert proc.returncode == 0, proc.stderr
    data_dir = here / "srv"
    assert f"initialized {data_dir}" in proc.stdout
    assert f"CA certificate: {data_dir / 'ca.pem'}" in proc.stdout
    saved = yaml.safe_load((data_dir / "server.yaml").read_text())
    assert saved["db_url"] == f"sqlite:///{data_dir / 'xwvm.db'}"


def test_run_from_another_folder_uses_the_same_database(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    assert _init(first, "srv").returncode == 0
    db = first / "srv" / "xwvm.db"
    proc, url = _serve(second, "../a/srv", first / "srv" / "ca.pem")
    try:
        client = Client(url, first / "srv" / "ca.pem")
        client.login("admin", ADMIN_PASSWORD)  # the admin exists only in init's database
        client.create_group("made-from-b")
    finally:
        _stop(proc)
    assert "made-from-b" in _groups_in(db)
    assert list(second.iterdir()) == []  # no database (or anything) made where it ran


def test_relative_db_url_in_server_yaml_is_under_the_data_dir(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    assert _init(first, "srv").returncode == 0
    config = first / "srv" / "server.yaml"
    values = yaml.safe_load(config.read_text())
    values["db_url"] = "sqlite:///xwvm.db"  # as an admin might write it by hand
    config.write_text(yaml.safe_dump(values))
    proc, url = _serve(second, "../a/srv", first / "srv" / "ca.pem")
    try:
        client = Client(url, first / "srv" / "ca.pem")
        client.login("admin", ADMIN_PASSWORD)
        client.create_group("relative-ok")
    finally:
        _stop(proc)
    assert "relative-ok" in _groups_in(first / "srv" / "xwvm.db")


def _refused(cwd: Path, data_dir: str) -> str:
    proc = run_cli(["server", "run", "--data-dir", data_dir, "--bind", "127.0.0.1:1"],
                   cwd / "cfg", cwd=cwd, check=False, timeout=60)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    return proc.stderr


def test_uninitialized_data_dirs_are_refused_untouched(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    err = _refused(tmp_path, "empty")
    assert f"{empty} is not an initialized xwvm data directory" in err
    assert "xwvm server init" in err
    assert list(empty.iterdir()) == []
    assert "does not exist" in _refused(tmp_path, "missing")
    assert not (tmp_path / "missing").exists()


def test_a_data_dir_whose_database_is_gone_is_refused(tmp_path: Path) -> None:
    assert _init(tmp_path, "srv").returncode == 0
    db = tmp_path / "srv" / "xwvm.db"
    for companion in (tmp_path / "srv").glob("xwvm.db*"):
        companion.unlink()
    err = _refused(tmp_path, "srv")
    assert f"the database file {db} does not exist" in err
    assert not db.exists()
    db.touch()  # an empty file is no server's database either, and stays empty
    assert f"the database file {db} is empty" in _refused(tmp_path, "srv")
    assert db.stat().st_size == 0


def test_a_failed_init_leaves_nothing(tmp_path: Path) -> None:
    unreachable = f"postgresql+psycopg://xwvm@127.0.0.1:{free_port()}/xwvm"
    proc = _init(tmp_path, "srv", "--db", unreachable)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "cannot initialize the database" in proc.stderr
    assert not (tmp_path / "srv").exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    proc = _init(tmp_path, "kept", "--db", "not a url")
    assert proc.returncode != 0 and "is not a database URL" in proc.stderr
    assert [p.name for p in kept.iterdir()] == ["notes.txt"]


def test_init_refuses_an_initialized_data_dir(tmp_path: Path) -> None:
    assert _init(tmp_path, "srv").returncode == 0
    before = (tmp_path / "srv" / "server.yaml").read_bytes()
    proc = _init(tmp_path, "srv")
    assert proc.returncode != 0 and "already initialized" in proc.stderr
    assert (tmp_path / "srv" / "server.yaml").read_bytes() == before
    assert (tmp_path / "srv" / "ca.pem").exists()
