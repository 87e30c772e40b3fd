"""A client whose token ended renews it through ``reauth`` and tries once more, file
uploads included (their body is a stream the request itself cannot replay): a worker's
results are not lost because its token ended while the payload ran."""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.processes import ServerProcess
from tests.templates.conftest import MiB, push, random_file
from xwvm.client.sdk import ApiError, Client

HYPERVISORS = {"libvirt": {"usable": True, "accel": "tcg", "reason": "test"}}


def _running_job(server: ServerProcess, tmp_path: Path,
                 name: str) -> tuple[Client, str, Callable[[], str]]:
    """A worker holding a running VM job, whose token was then revoked (an expired one
    is refused the same way); and how that worker logs in again."""
    admin = server.client()
    push(admin, f"{name}-tpl", "1.0", {"disk": random_file(tmp_path / "d.qcow2", MiB)})
    job = admin.submit(template=f"{name}-tpl", command="true")
    cred = admin.enroll_worker()

    def login() -> str:
        return Client(server.url, server.ca).login(cred["login"], cred["password"])["token"]

    worker = Client(server.url, server.ca, token=login())
    host = worker.register_host({"name": name, "os": "linux", "arch": "x86_64", "cpus": 2,
                                 "memory_mb": 4096, "disk_mb": 100000,
                                 "hypervisors": HYPERVISORS})["uid"]
    assert worker.request_work(host)["work"]["uid"] == job["uid"]
    stale = worker.token
    worker.logout()
    worker.token = stale
    return worker, job["uid"], login


def _archive(tmp_path: Path) -> Path:
    out = tmp_path / "stdout.txt"
    out.write_text("done\n")
    archive = tmp_path / "results.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(out, arcname="stdout.txt")
    return archive


def test_results_sent_with_an_ended_token_go_again_after_reauth(
        shared_server: ServerProcess, tmp_path: Path) -> None:
    worker, uid, login = _running_job(shared_server, tmp_path, "reauth-h1")
    renewed: list[str] = []
    worker.reauth = lambda: renewed.append(login()) or renewed[-1]
    worker.upload_result(uid, _archive(tmp_path))
    assert len(renewed) == 1 and worker.token == renewed[0]
    assert worker.report(uid, "COMPLETED", 0)["status"] == "COMPLETED"


def test_without_reauth_the_ended_token_is_the_error(shared_server: ServerProcess,
                                                      tmp_path: Path) -> None:
    worker, uid, _ = _running_job(shared_server, tmp_path, "reauth-h2")
    with pytest.raises(ApiError) as e:
        worker.upload_result(uid, _archive(tmp_path))
    assert e.value.code == "token_revoked"
