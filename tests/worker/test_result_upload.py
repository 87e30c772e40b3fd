"""The worker's results upload retries what may pass (no answer, any 5xx: a full blob disk
answers 500; 408, 429), tells the server RESULTREQUEST after a few failures, and does not
retry what the server refused for good (a 400, 409 or 413 is reported as the job's error)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.worker.test_hostile_server import (
    JOB,
    FakeServer,
    Reply,
    _Handler,
    _json,
    fake,  # noqa: F401  (the fixture)
)
from xwvm.worker.credential import Credential
from xwvm.worker.pull import Worker, WorkerOptions

RESULT = rf"/api/v1/works/({JOB})/result"


def _worker(fake: FakeServer, tmp: Path) -> Worker:  # noqa: F811
    cred = Credential(server=fake.url, login="w", password="pw", ca_pem=fake.ca.read_text())
    w = Worker(cred, WorkerOptions(work_dir=tmp / "w", name="w", hypervisor="none",
                                   allow_unsigned_apps=True, max_backoff=0.05,
                                   upload_attempts=2))
    w.client.token = "tok"
    return w


def _answers(fake: FakeServer, *statuses: int) -> None:  # noqa: F811
    """The result endpoint answers ``statuses`` in turn, then 200."""
    left = list(statuses)

    def route(h: _Handler, m: re.Match[str]) -> Reply:
        status = left.pop(0) if left else 200
        if status == 200:
            return _json({"uid": m.group(1)})
        return _json({"error": "nope", "message": f"refused with {status}"}, status)

    fake.routes[("PUT", RESULT)] = route


def _archive(tmp: Path) -> Path:
    archive = tmp / "results.tar.gz"
    archive.write_bytes(b"not really a tarball")
    return archive


def test_transient_failures_are_retried_and_the_server_told(fake: FakeServer,  # noqa: F811
                                                            tmp_path: Path) -> None:
    _answers(fake, 503, 502, 504)
    assert _worker(fake, tmp_path)._upload(JOB, _archive(tmp_path), 0) is True
    assert fake.count("PUT", "/result") == 4
    assert [r["status"] for r in fake.reports] == ["RESULTREQUEST"]
    assert "refused with 502" in fake.reports[0]["message"]


def test_a_permanent_refusal_is_not_retried_and_is_the_jobs_error(
        fake: FakeServer, tmp_path: Path) -> None:  # noqa: F811
    for status in (400, 409, 413):
        fake.reports.clear()
        _answers(fake, status)
        since = fake.count("PUT", "/result")
        assert _worker(fake, tmp_path)._upload(JOB, _archive(tmp_path), 3) is False
        assert fake.count("PUT", "/result") == since + 1, status
        assert [(r["status"], r["exit_code"]) for r in fake.reports] == [("ERROR", 3)]
        assert f"refused with {status}" in fake.reports[0]["message"]


def test_server_errors_timeouts_and_throttles_are_retried_and_the_results_kept(
        fake: FakeServer, tmp_path: Path) -> None:  # noqa: F811
    """Review finding 3: a 500 (a full blob disk) discarded the results as a refusal."""
    for status in (500, 507, 408, 429):
        fake.reports.clear()
        _answers(fake, status, status, status)
        since = fake.count("PUT", "/result")
        assert _worker(fake, tmp_path)._upload(JOB, _archive(tmp_path), 0) is True, status
        assert fake.count("PUT", "/result") == since + 4, status
        assert [r["status"] for r in fake.reports] == ["RESULTREQUEST"], status
        assert f"refused with {status}" in fake.reports[0]["message"]


def test_a_job_no_longer_ours_is_dropped_silently(fake: FakeServer,  # noqa: F811
                                                  tmp_path: Path) -> None:
    _answers(fake, 404)
    assert _worker(fake, tmp_path)._upload(JOB, _archive(tmp_path), 0) is False
    assert fake.count("PUT", "/result") == 1 and fake.reports == []
