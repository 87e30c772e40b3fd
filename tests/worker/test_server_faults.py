"""A failing or hostile server against a real worker: a 500 on a work request or a
heartbeat, a period too large for a float, a final report refused. The worker backs off
and keeps going, and ends a job whose final report is refused as ERROR instead of leaving
it RUNNING until the reaper. (An upload's faults: test_result_upload.py.)

The server is the fake one of test_hostile_server.py (TLS on loopback); the worker, its
client and its pull loop are the real ones.
"""
from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.worker.test_hostile_server import (
    DATA,
    HOST,
    JOB,
    FakeServer,
    Reply,
    _file,
    _finish,
    _Handler,
    _json,
    _native_job,
    _worker,
)
from xwvm.protocol.vocab import JobStatus
from xwvm.worker.credential import Credential
from xwvm.worker.pull import Worker, WorkerOptions

HUGE = 10 ** 400  # valid JSON; no float holds it
WORK = f"/api/v1/hosts/{HOST}/work"
BEAT = f"/api/v1/hosts/{HOST}/heartbeat"


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeServer]:
    server = FakeServer(tmp_path)
    yield server
    server.close()


def _failing(times: int, then: Reply, status: int = 500) -> Any:
    """A route that answers ``status`` ``times`` times, then ``then``."""
    left = [times]

    def route(h: _Handler, m: re.Match[str]) -> Reply:
        if left[0] > 0:
            left[0] -= 1
            return _json({"error": "internal", "message": "database is locked"}, status)
        return then

    return route


def test_a_500_on_work_requests_never_ends_the_pull_loop(fake: FakeServer,
                                                         tmp_path: Path) -> None:
    fake.routes[("POST", WORK)] = _failing(3, _json({"retry_after": HUGE}))
    proc = _worker(fake, tmp_path / "w", "--max-idle", "9")  # counted from the start
    out = _finish(proc)
    assert proc.returncode == 0, out
    assert "Traceback" not in out, out
    assert fake.count("POST", "/work") >= 5, out  # 3 refused, then asked on and on
    assert "database is locked" in out, "each failure is logged"


def test_heartbeats_go_on_through_500s_and_huge_periods(fake: FakeServer,
                                                        tmp_path: Path) -> None:
    beats = [0]

    def heartbeat(h: _Handler, m: re.Match[str]) -> Reply:
        beats[0] += 1
        if beats[0] % 2:
            return _json({"error": "internal", "message": "no"}, 500)
        return _json({"alive_period": HUGE, "stop": []})

    def stalled(h: _Handler, m: re.Match[str]) -> Reply:
        time.sleep(6)  # the job runs (fetching its input) for 6 s
        return _json({"error": "gone", "message": "no such data"}, 404)

    fake.routes[("POST", BEAT)] = heartbeat
    fake.routes[("GET", f"/api/v1/data/{DATA}/content")] = stalled
    fake.routes[("POST", WORK)] = lambda h, m: _json(
        {"work": _native_job(files=[_file("in.txt", b"x")]), "alive_period": 1}
        if fake.count("POST", "/work") == 1 else {"retry_after": 1})
    out = _finish(_worker(fake, tmp_path / "w", "--max-jobs", "1"))
    assert fake.reports and fake.reports[0]["status"] == "ERROR", out
    assert beats[0] >= 3, (beats, out)  # one a second, whatever the answers said


def _in_process_worker(fake: FakeServer, tmp_path: Path) -> Worker:
    opts = WorkerOptions(work_dir=tmp_path / "w", name="pc", hypervisor="none",
                         max_backoff=0.2, upload_attempts=2)
    worker = Worker(Credential(fake.url, "w", "pw", ca_pem=fake.ca.read_text()), opts)
    worker.client.token = "tok"
    return worker


def _refusing(status: int, code: str, refused: str) -> Any:
    """A report route that refuses reports of status ``refused`` and takes the others."""
    def route(h: _Handler, m: re.Match[str]) -> Reply:
        body = json.loads(h.body)
        if body["status"] == refused:
            return _json({"error": code, "message": f"{code} for {body['status']}"}, status)
        with h.server.fake.lock:
            h.server.fake.reports.append({"uid": m.group(1), **body})
        return _json({"uid": m.group(1)})
    return route


def test_a_completed_report_refused_for_want_of_results_becomes_error(
        fake: FakeServer, tmp_path: Path) -> None:
    """A guest that claims it uploaded (it did not): COMPLETED is refused (409 no_results);
    the job must end as ERROR now, not stay RUNNING until the reaper."""
    fake.routes[("POST", r"/api/v1/works/(.+)/report")] = _refusing(409, "no_results",
                                                                     "COMPLETED")
    worker = _in_process_worker(fake, tmp_path)
    assert worker._report(JOB, JobStatus.COMPLETED, 0, "done") is True
    assert [r["status"] for r in fake.reports] == ["ERROR"], fake.reports
    assert "no_results for COMPLETED" in fake.reports[0]["message"]
    assert fake.reports[0]["exit_code"] == 0


def test_a_final_report_refused_as_malformed_becomes_error(fake: FakeServer,
                                                           tmp_path: Path) -> None:
    calls = []

    def route(h: _Handler, m: re.Match[str]) -> Reply:
        body = json.loads(h.body)
        calls.append(body)
        if body["exit_code"] is not None:
            return _json({"error": "bad_status", "message": "invalid report: exit_code"}, 400)
        with h.server.fake.lock:
            h.server.fake.reports.append({"uid": m.group(1), **body})
        return _json({"uid": m.group(1)})

    fake.routes[("POST", r"/api/v1/works/(.+)/report")] = route
    worker = _in_process_worker(fake, tmp_path)
    assert worker._report(JOB, JobStatus.COMPLETED, 7) is True
    assert [(r["status"], r["exit_code"]) for r in fake.reports] == [("ERROR", None)]
    assert "invalid report: exit_code" in fake.reports[0]["message"]
    assert len(calls) == 2, "one fallback, never a loop"


def test_results_a_full_blob_store_keeps_refusing_are_given_back_at_the_wall_clock(
        fake: FakeServer, tmp_path: Path) -> None:
    """The server answers 507 storage_full to every upload (its blob store is full): the
    worker keeps the results and retries, tells RESULTREQUEST after a few, and when the
    job's wall clock ends gives the job back (fault server) instead of dropping it."""
    fake.routes[("PUT", r"/api/v1/works/(.+)/result")] = lambda h, m: _json(
        {"error": "storage_full", "message": "the server's blob store is full"}, 507)
    worker = _in_process_worker(fake, tmp_path)
    archive = tmp_path / "results.tar.gz"
    archive.write_bytes(b"results")
    worker._deadline = time.monotonic() + 2
    started = time.monotonic()
    assert worker._upload(JOB, archive, 0) is False
    assert 2 <= time.monotonic() - started < 5
    assert fake.count("PUT", "/result") >= 3 and archive.exists()
    assert [r["status"] for r in fake.reports] == ["RESULTREQUEST", "PENDING"], fake.reports
    assert fake.reports[1]["fault"] == "server"
    assert "wall clock" in fake.reports[1]["message"]


def test_after_a_full_disk_give_back_the_worker_pauses_one_poll_then_takes_jobs(
        fake: FakeServer, tmp_path: Path) -> None:
    """Never for ever (the reviewer's case: the partial files are gone by then, so "more
    free than at the fault" could never come): one poll period, then the usual rule."""
    worker = _in_process_worker(fake, tmp_path)
    worker.opts.disk_poll_s, worker.opts.min_free_mb = 0.5, 0
    worker._disk_full = True
    started = time.monotonic()
    assert worker._wait_for_room() is True
    assert 0.5 <= time.monotonic() - started < 3 and worker._disk_full is False
    started = time.monotonic()
    assert worker._wait_for_room() is True and time.monotonic() - started < 0.5
