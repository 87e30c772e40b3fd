"""docs/admin-guide.md's PostgreSQL steps, run as written against a fresh PostgreSQL 15:
the role, the database it owns, `server init --db`, `server run`, then a login and a
write."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import requests

from tests.support.postgres import PostgresServer, free_port
from tests.support.processes import ADMIN_PASSWORD, XWVM
from xwvm.client.sdk import Client

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "admin-guide.md"
SUPERUSER = ["sudo", "-u", "postgres"]


def guide_commands() -> list[list[str]]:
    """The commands of the first fenced block under '### PostgreSQL', as argument lists
    (backslash continuations joined)."""
    text = GUIDE.read_text()
    section = text[text.index("### PostgreSQL\n"):]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "no ```sh block under ### PostgreSQL in docs/admin-guide.md"
    return [shlex.split(line) for line in block.group(1).replace("\\\n", " ").splitlines()
            if line.strip()]


@pytest.fixture
def fresh_postgres() -> Iterator[PostgresServer]:
    pg = PostgresServer().start()  # its own: the steps make a role, which is cluster-wide
    yield pg
    pg.stop()


def _substituted(argv: list[str], pg: PostgresServer, data_dir: Path, bind: str) -> list[str]:
    """The guide's example host, data directory and address replaced by the test's."""
    swap = {"/srv/xwvm": str(data_dir), "0.0.0.0:4322": bind}
    out = [swap.get(a, a).replace("@dbhost/", f"@127.0.0.1:{pg.port}/") for a in argv]
    return [*XWVM, *out[1:]] if out[0] == "xwvm" else out


def _run_step(argv: list[str], cwd: Path, env: dict[str, str]) -> None:
    if argv[:3] == SUPERUSER:
        # `sudo -u postgres` is how the guide acts as the database's superuser; the test's
        # cluster trusts its TCP clients, so naming the role does the same.
        argv, env = argv[3:], {**env, "PGUSER": "postgres"}
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, f"{shlex.join(argv)} failed:\n{proc.stdout}\n{proc.stderr}"


def _serve(argv: list[str], cwd: Path, url: str, ca: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        try:
            requests.get(f"{url}/api/v1/health", verify=str(ca), timeout=2)
            return proc
        except requests.RequestException:
            time.sleep(0.2)
    raise AssertionError(f"{shlex.join(argv)} did not answer (exit {proc.poll()})")


@pytest.mark.postgres
def test_the_guides_postgresql_steps_work(fresh_postgres: PostgresServer,
                                          tmp_path: Path) -> None:
    steps = guide_commands()
    assert [s[3] for s in steps if s[:3] == SUPERUSER] == ["createuser", "createdb"]
    assert any("postgresql+psycopg://" in a for s in steps for a in s)
    (tmp_path / "admin.pw").write_text(ADMIN_PASSWORD)
    data_dir, port = tmp_path / "srv", free_port()
    env = {**os.environ, "PGHOST": "127.0.0.1", "PGPORT": str(fresh_postgres.port)}
    server = None
    try:
        for step in steps:
            argv = _substituted(step, fresh_postgres, data_dir, f"127.0.0.1:{port}")
            if step[:3] == ["xwvm", "server", "run"]:
                server = _serve(argv, tmp_path, f"https://127.0.0.1:{port}",
                                data_dir / "ca.pem")
            else:
                _run_step(argv, tmp_path, env)
        assert server is not None, "the guide's block starts no server"
        client = Client(f"https://127.0.0.1:{port}", data_dir / "ca.pem")
        client.login("admin", ADMIN_PASSWORD)
        client.create_group("from-the-guide")
    finally:
        if server is not None and server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
    with psycopg.connect(f"postgresql://xwvm@127.0.0.1:{fresh_postgres.port}/xwvm") as conn:
        groups = [r[0] for r in conn.execute("SELECT name FROM usergroups")]
    assert groups == ["from-the-guide"]
