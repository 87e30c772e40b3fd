"""Several server processes on one PostgreSQL database: every job runs exactly once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.e2e.conftest import make_app
from tests.support.postgres import PostgresServer
from tests.support.processes import ServerProcess, WorkerProcess
from xwvm.worker.credential import Credential


@pytest.mark.postgres
@pytest.mark.slow
def test_two_servers_one_postgres(postgres: PostgresServer, tmp_path: Path) -> None:
    url = postgres.create_database("e2e_two_servers")
    first = ServerProcess(tmp_path, db_url=url).init().start()
    second = first.sibling("server-b").start()
    workers: list[WorkerProcess] = []
    try:
        admin = first.client()
        make_app(admin, tmp_path, "twice", 'echo $(( $1 * 2 ))\n')
        jobs = {admin.submit("twice", args=[str(i)])["uid"]: i for i in range(80)}
        for i in range(4):
            srv = first if i % 2 == 0 else second
            cred = admin.enroll_worker()
            path = tmp_path / f"cred{i}.json"
            Credential(server=srv.url, login=cred["login"], password=cred["password"],
                       ca_pem=srv.ca.read_text()).save(path)
            workers.append(WorkerProcess(tmp_path, path, f"pgw{i}").start())
        done = second.client().wait(list(jobs), timeout=300)
        events = second.client().events()
    finally:
        for w in workers:
            w.stop()
        second.stop()
        first.stop()
    assert Counter(w["status"] for w in done) == {"COMPLETED": 80}
    assert all(w["retries"] == 0 for w in done)
    runs = Counter(e["object"] for e in events if e["to"] == "RUNNING")
    assert set(runs.values()) == {1} and set(runs) == set(jobs)
    assert len({w["host"] for w in done}) == 4

