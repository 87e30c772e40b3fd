"""Every submitted integer is bounded by the schema: a value that a timedelta (a delegated
token's lifetime) or a database column (32-bit INTEGER on PostgreSQL, 64-bit on SQLite)
cannot hold is refused as invalid_body when it is sent, never a 500 later, when a worker
asks for the job. On SQLite and on PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.support.postgres import PostgresServer
from tests.support.processes import ServerProcess
from xwvm.client.sdk import Client
from xwvm.protocol import JobStatus
from xwvm.protocol.paths import API_PREFIX, work_report
from xwvm.server.api.base import INT32_MAX, JSON_INT_MAX
from xwvm.server.api.works import MAX_SECONDS


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres",
                                                               marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    db_url = None
    if request.param == "postgres":
        pg: PostgresServer = request.getfixturevalue("postgres")
        db_url = pg.create_database(f"limits_{uuid.uuid4().hex[:8]}")
    srv = ServerProcess(tmp_path_factory.mktemp("srv"), db_url=db_url).init().start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def admin(server: ServerProcess) -> Client:
    return server.client()


def _post(server: ServerProcess, client: Client, path: str,
          body: dict[str, Any]) -> requests.Response:
    return requests.post(f"{server.url}{API_PREFIX}{path}", json=body, timeout=30,
                         headers={"Authorization": f"Bearer {client.token}"},
                         verify=str(server.ca))


def _shared_app(admin: Client) -> str:
    name = f"limits-{uuid.uuid4().hex[:10]}"
    admin.create_app(name, kind="shared")
    return name


@pytest.mark.parametrize("field,value", [
    ("wall_clock_s", 10**12), ("wall_clock_s", MAX_SECONDS + 1),
    ("pilot_idle_s", 10**12),
    ("min_memory_mb", INT32_MAX + 1), ("min_cpus", 2**40),
    ("min_disk_mb", 2**63), ("max_retries", 2**63),
])
def test_an_out_of_range_integer_is_invalid_body(server: ServerProcess, admin: Client,
                                                 field: str, value: int) -> None:
    before = admin.list_works()
    resp = _post(server, admin, "/works", {"app": _shared_app(admin), field: value})
    assert resp.status_code == 400, (resp.status_code, resp.text)
    body = resp.json()
    assert body["error"] == "invalid_body" and f"/{field}" in body["message"], body
    assert admin.list_works() == before


def test_the_largest_values_are_served_and_reported(server: ServerProcess,
                                                    admin: Client) -> None:
    app = _shared_app(admin)
    job = admin.submit(app, wall_clock_s=MAX_SECONDS, min_memory_mb=0, min_cpus=0)
    assert job["wall_clock_s"] == MAX_SECONDS
    cred = admin.enroll_worker(public=True)
    worker = server.client(cred["login"], cred["password"])
    host = worker.register_host({"name": f"h-{uuid.uuid4().hex[:8]}", "os": "linux",
                                 "arch": "x86_64", "cpus": 2, "memory_mb": 2048,
                                 "disk_mb": 4096, "shared_apps": [app]})
    got = worker.request_work(host["uid"])["work"]  # its token lives ten years and more
    assert got["uid"] == job["uid"]
    for code in (INT32_MAX + 1, -INT32_MAX - 2, 10**30):
        resp = _post(server, worker, work_report(job["uid"]),
                     {"status": "COMPLETED", "exit_code": code})
        assert resp.status_code == 400, (code, resp.status_code, resp.text)
        assert resp.json()["error"] == "invalid_body"
    worker.report(job["uid"], JobStatus.ERROR, exit_code=-INT32_MAX - 1, message="killed")
    done = admin.get_work(job["uid"])
    assert done["status"] == "ERROR" and done["exit_code"] == -INT32_MAX - 1


@pytest.mark.parametrize("field,value", [
    ("memory_mb", INT32_MAX + 1), ("disk_mb", JSON_INT_MAX + 1), ("cpus", 2**40),
])
def test_a_host_record_with_an_out_of_range_integer_is_invalid_body(
        server: ServerProcess, admin: Client, field: str, value: int) -> None:
    cred = admin.enroll_worker(public=True)
    worker = server.client(cred["login"], cred["password"])
    facts = {"name": f"h-{uuid.uuid4().hex[:8]}", "os": "linux", "arch": "x86_64",
             "cpus": 2, "memory_mb": 2048, "disk_mb": 4096, field: value}
    resp = _post(server, worker, "/hosts", facts)
    assert resp.status_code == 400, (resp.status_code, resp.text)
    assert resp.json()["error"] == "invalid_body" and f"/{field}" in resp.json()["message"]
    assert all(h["name"] != facts["name"] for h in admin.get("/hosts"))
