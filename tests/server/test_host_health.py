"""A job given back for an infrastructure fault, against a real server over TLS: the retry
counts (RUNNING → PENDING, ERROR once spent), the host's fault streak opens its circuit
breaker (no job while paused, events and the host record say so), a job that runs closes
it, and a worker stopping is no fault of its host. Hostile reports are refused."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.processes import ServerProcess
from xwvm.client.sdk import ApiError, Client
from xwvm.protocol import paths

PAUSE_S = 3


@dataclass
class Site:
    server: ServerProcess
    admin: Client

    def app(self) -> str:
        name = f"app-{uuid.uuid4().hex[:6]}"
        self.admin.create_app(name, kind="shared")
        return name

    def worker(self, app: str) -> tuple[Client, str]:
        cred = self.admin.enroll_worker()
        worker = self.server.client(cred["login"], cred["password"])
        host = worker.register_host({"name": f"h-{uuid.uuid4().hex[:6]}", "os": "linux",
                                     "arch": "x86_64", "cpus": 2, "memory_mb": 2048,
                                     "disk_mb": 4096, "shared_apps": [app]})["uid"]
        return worker, host


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    server = ServerProcess(tmp_path_factory.mktemp("health"), env={
        "XWVM_HOST_FIRST_PAUSE_S": str(PAUSE_S), "XWVM_HOST_MAX_PAUSE_S": "3600",
        "XWVM_HOST_FAULTS_TO_PAUSE": "3"}).init().start()
    yield Site(server, server.client())
    server.stop()


def take(worker: Client, host: str) -> str:
    answer = worker.request_work(host)
    assert answer.get("work"), answer
    return answer["work"]["uid"]


def host_record(site: Site, host: str) -> dict:
    [row] = [h for h in site.admin.list_hosts() if h["uid"] == host]
    return row


def test_a_job_given_back_counts_its_retry_and_names_the_fault(site: Site) -> None:
    app = site.app()
    worker, host = site.worker(app)
    job = site.admin.submit(app, max_retries=1)["uid"]
    assert take(worker, host) == job
    worker.report(job, "PENDING", message="look up domain: broken pipe", fault="hypervisor")
    got = site.admin.get_work(job)
    assert (got["status"], got["retries"], got["host"]) == ("PENDING", 1, None)
    story = [e for e in site.admin.events(job) if e["kind"] == "transition"]
    assert story[-1]["from"] == "RUNNING" and story[-1]["to"] == "PENDING"
    assert "(hypervisor)" in story[-1]["detail"] and "broken pipe" in story[-1]["detail"]
    assert "retry 1 of 1" in story[-1]["detail"]
    assert take(worker, host) == job
    worker.report(job, "PENDING", message="QEMU died", fault="vm_crashed")
    got = site.admin.get_work(job)
    assert got["status"] == "ERROR" and got["retries"] == 2
    assert "gave up after 1 retries" in got["error"] and "vm_crashed" in got["error"]


def test_three_faults_in_a_row_pause_the_host_until_its_breaker_closes(site: Site) -> None:
    app = site.app()
    worker, host = site.worker(app)
    jobs = [site.admin.submit(app)["uid"] for _ in range(4)]
    for _ in range(3):
        worker.report(take(worker, host), "PENDING", message="no room", fault="disk_full")
    health = host_record(site, host)["health"]
    assert health["fault_streak"] == 3 and health["paused_until"]
    assert health["last_fault"].startswith("disk_full: no room")
    paused = worker.request_work(host)
    assert not paused.get("work") and paused["retry_after"] >= PAUSE_S - 1
    assert any(e["kind"] == "host_paused" for e in site.admin.events(host))
    time.sleep(PAUSE_S + 0.5)
    uid = take(worker, host)  # the pause is over: one more try
    assert uid in jobs
    worker.upload_result(uid, _results(uid))
    worker.report(uid, "COMPLETED", exit_code=0)
    health = host_record(site, host)["health"]
    assert health == {"fault_streak": 0, "last_fault": health["last_fault"],
                      "paused_until": None}
    assert any(e["kind"] == "host_healthy" for e in site.admin.events(host))


def test_the_pause_doubles_with_each_further_fault(site: Site) -> None:
    app = site.app()
    worker, host = site.worker(app)
    for _ in range(5):
        site.admin.submit(app)
    for _ in range(3):
        worker.report(take(worker, host), "PENDING", message="x", fault="host")
    time.sleep(PAUSE_S + 0.5)
    worker.report(take(worker, host), "PENDING", message="again", fault="vm_crashed")
    left = worker.request_work(host)["retry_after"]
    assert 2 * PAUSE_S - 1 <= left <= 2 * PAUSE_S + 1, left


@pytest.mark.parametrize("fault", ["stopping", "refused", "server", "image"])
def test_what_is_not_the_hosts_doing_never_pauses_it_but_counts_the_retry(
        site: Site, fault: str) -> None:
    app = site.app()
    worker, host = site.worker(app)
    job = site.admin.submit(app)["uid"]
    for _ in range(4):
        assert take(worker, host) == job
        worker.report(job, "PENDING", message="not here", fault=fault)
    assert site.admin.get_work(job)["retries"] == 4
    assert host_record(site, host)["health"]["fault_streak"] == 0
    assert take(worker, host) == job  # never paused


def test_an_old_workers_give_back_without_a_fault_reads_as_a_host_fault(site: Site) -> None:
    app = site.app()
    worker, host = site.worker(app)
    job = site.admin.submit(app)["uid"]
    take(worker, host)
    worker.report(job, "PENDING")
    assert site.admin.get_work(job)["retries"] == 1
    assert host_record(site, host)["health"]["last_fault"].startswith("host:")


@pytest.mark.parametrize("body", [
    {"status": "PENDING", "fault": "cosmic_rays"},
    {"status": "PENDING", "fault": 7},
    {"status": "ERROR", "fault": "hypervisor"},
    {"status": "COMPLETED", "exit_code": 0, "fault": "disk_full"},
    {"status": "PENDING", "fault": "x" * 33},
])
def test_a_malformed_fault_is_refused_and_changes_nothing(site: Site, body: dict) -> None:
    app = site.app()
    worker, host = site.worker(app)
    job = site.admin.submit(app)["uid"]
    take(worker, host)
    with pytest.raises(ApiError) as err:
        worker.post(paths.work_report(job), body)
    assert err.value.status == 400 and "fault" in err.value.message
    assert str(body["fault"]) not in err.value.message or body["fault"] == 7
    got = site.admin.get_work(job)
    assert (got["status"], got["retries"]) == ("RUNNING", 0)
    assert host_record(site, host)["health"]["fault_streak"] == 0


def test_another_hosts_worker_cannot_give_a_job_back(site: Site) -> None:
    app = site.app()
    worker, host = site.worker(app)
    stranger, _ = site.worker(app)
    job = site.admin.submit(app)["uid"]
    take(worker, host)
    with pytest.raises(ApiError) as err:
        stranger.report(job, "PENDING", message="mine now", fault="hypervisor")
    assert err.value.status in (403, 409)
    got = site.admin.get_work(job)
    assert (got["status"], got["retries"]) == ("RUNNING", 0)
    assert host_record(site, host)["health"]["fault_streak"] == 0


def _results(uid: str) -> Path:
    import tempfile
    path = Path(tempfile.mkdtemp()) / f"{uid}.tar.gz"
    path.write_bytes(b"results")
    return path
