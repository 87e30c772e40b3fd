"""The nested worker against a real server that goes away: its inputs and results wait
the outage out (the server stopped, then started again on the same port) until the
job's deadline, the results archive kept on the guest's disk meanwhile; a server that
refuses (the job moved on, another job's credential) ends the delivery at once; an
outage past the deadline is said in the verdict. Failing beats never stop the payload
and are said once per change, not once per beat."""

from __future__ import annotations

import logging
import socket
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance.errors import GuestError
from appliance.http import OUTAGE, Server, failure_status
from appliance.nested import NestedWorker, job_deadline
from contextualizer.model import InputRef, JobContext, Limits, Mode, Payload
from tests.support.processes import ServerProcess
from tests.templates.conftest import MiB, push, random_file
from tests.templates.test_delegation import vm_capable_worker
from xwvm.client.sdk import Client
from xwvm.protocol import exchange
from xwvm.protocol.retry import Backoff
from xwvm.protocol.vocab import Fault

# A guest that waits out what it should not (a refusal, past its deadline) fails, not hangs.
pytestmark = pytest.mark.timeout(120)
FAST = Backoff(first=0.1, cap=0.5, attempts=None)  # the guest's PATIENT, in tenths
TEMPLATE = "outage-tpl"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server of this module's own (its tests stop it), whose hosts are not declared
    lost while it is away (the outer worker's heartbeats are not under test here)."""
    srv = ServerProcess(tmp_path_factory.mktemp("outage"), alive_period=600).init().start()
    push(srv.client(), TEMPLATE, "1.0",
         {"disk": random_file(tmp_path_factory.mktemp("tpl") / "d.qcow2", MiB)})
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def running(server: ServerProcess) -> Iterator[None]:
    """Every test leaves the server answering, whatever it did to it."""
    yield
    if server.proc is None:
        server.start()


@dataclass
class Guest:
    """One VM job as its nested worker sees it: taken by a worker, with its exchange disk."""

    admin: Client
    worker: Client
    uid: str
    nested: NestedWorker
    disk: Path
    work_dir: Path

    def verdict(self, tmp: Path) -> exchange.Results:
        return exchange.read_results(self.disk, self.uid, tmp / "verdict.tar.gz")


def take_job(server: ServerProcess, tmp: Path, command: str, with_input: bool = True
             ) -> tuple[Client, Client, dict]:
    """A VM job (with one input), submitted and taken by a worker: (admin, worker, work)."""
    admin = server.client()
    inputs = []
    if with_input:
        data = tmp / "in.txt"
        data.write_text("input for the VM\n")
        inp = admin.upload_data(data, access_rights="700")
        inputs = [{"data": inp["uid"], "name": "in.txt"}]
    job = admin.submit(template=TEMPLATE, command=command, wall_clock_s=300, inputs=inputs)
    worker, host = vm_capable_worker(server, admin, f"outage-{uuid.uuid4().hex[:8]}")
    work = worker.request_work(host)["work"]
    assert work["uid"] == job["uid"]
    return admin, worker, work


def guest(server: ServerProcess, tmp: Path, taken: tuple[Client, Client, dict],
          deadline_s: float = 120, token: str | None = None,
          pilot_idle_s: int | None = None) -> Guest:
    """The nested worker of a taken job, its backoff in tenths of the guest's, a beat every
    0.2 s and a deadline ``deadline_s`` from now; ``token``: another credential;
    ``pilot_idle_s``: a pilot's, which idles that long."""
    admin, worker, work = taken
    uid = work["uid"]
    inputs = tuple(InputRef(f["data"], f["name"], f["sha256"]) for f in work["files"]
                   if f["role"] == "input")
    mode = Mode.PILOT if pilot_idle_s else Mode.SINGLE
    ctx = JobContext(job_uid=uid, owner="admin", app=TEMPLATE, mode=mode,
                     server_url=server.url, server_ca_pem=server.ca.read_text(),
                     credential=work["delegated_token"],
                     payload=Payload(command=work["command"], inputs=inputs),
                     limits=Limits(wall_clock_seconds=300, cpus=1, memory_mb=256, disk_mb=1,
                                   idle_seconds=pilot_idle_s))
    disk = tmp / "exchange.img"
    exchange.create(disk, uid, [], results_capacity=0)  # as a network job's
    deadline = time.monotonic() + deadline_s
    api = Server(server.url, server.ca, token or work["delegated_token"], timeout=5,
                 backoff=FAST, deadline=deadline)
    nested = NestedWorker(ctx, api, tmp / "jobs", None, disk, deadline, beat_s=0.2)
    return Guest(admin, worker, uid, nested, disk, tmp / "jobs")


def in_background(fn: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    got: list[object] = []
    thread = threading.Thread(target=lambda: got.append(fn()), daemon=True)
    thread.start()
    return thread, got


def wait_for(what: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def said(caplog: pytest.LogCaptureFixture, words: str) -> int:
    return sum(words in r.getMessage() for r in caplog.records)


def result_files(g: Guest, tmp: Path) -> dict[str, bytes]:
    got = g.admin.download_result(g.uid, tmp / "result.tar.gz")
    with tarfile.open(got) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()  # type: ignore[union-attr]
                if m.isfile()}


def test_results_wait_for_a_server_that_went_away_and_are_delivered(
        server: ServerProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    g = guest(server, tmp_path, take_job(server, tmp_path, "cp in.txt out.txt; sleep 2"))
    thread, got = in_background(g.nested.run_single)
    wait_for(lambda: (g.work_dir / g.uid / "run" / "out.txt").exists())
    server.stop()  # while the payload runs: its beats fail, then its upload does
    archive = g.work_dir / g.uid / "results.tar.gz"
    wait_for(lambda: said(caplog, "results: ") >= 1, timeout=20)  # the upload waits
    time.sleep(1.5)  # a few attempts, all failed
    assert archive.exists() and thread.is_alive()  # kept on disk between attempts
    server.start()  # the same port: the guest's URL is unchanged
    thread.join(60)
    assert got == [0]
    verdict = g.verdict(tmp_path)
    assert (verdict.exit_code, verdict.message, verdict.uploaded) == (0, "", True)
    assert result_files(g, tmp_path)["out.txt"] == b"input for the VM\n"
    assert g.worker.report(g.uid, "COMPLETED", 0)["status"] == "COMPLETED"
    assert not (g.work_dir / g.uid).exists()  # delivered: nothing left behind
    # said when it started and when it ended, not once per attempt or per beat
    assert said(caplog, "progress beats fail") == 1
    assert said(caplog, "results: PUT") == 1
    assert said(caplog, "results: the server answers again") == 1


def test_inputs_wait_for_the_server_too(server: ServerProcess, tmp_path: Path,
                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    g = guest(server, tmp_path, take_job(server, tmp_path, "cp in.txt out.txt"))
    server.stop()  # before the guest asks for its input
    thread, got = in_background(g.nested.run_single)
    wait_for(lambda: said(caplog, "the download of input data") >= 1, timeout=20)
    server.start()
    thread.join(60)
    assert got == [0]
    assert g.verdict(tmp_path).uploaded
    assert result_files(g, tmp_path)["out.txt"] == b"input for the VM\n"
    assert said(caplog, "the download of input data") == 2  # failing, answered again


def test_a_job_that_moved_on_is_stopped_and_its_results_refused_at_once(
        server: ServerProcess, tmp_path: Path) -> None:
    # (a deadline short enough that waiting out a refusal would fail, not hang, the test)
    g = guest(server, tmp_path, take_job(server, tmp_path, "sleep 30", with_input=False),
              deadline_s=20)
    thread, got = in_background(g.nested.run_single)
    wait_for(lambda: (g.work_dir / g.uid / "run").exists())
    # the outer worker (or the server's sweep) ended the job: its credential is revoked
    assert g.worker.report(g.uid, "ERROR", None, "ended elsewhere")["status"] == "ERROR"
    started = time.monotonic()
    thread.join(30)
    assert not thread.is_alive() and time.monotonic() - started < 10
    verdict = g.verdict(tmp_path)
    assert not verdict.uploaded and verdict.fault is None  # a refusal is no outage
    assert verdict.message.startswith("stopped by the worker; the server refused the "
                                      "results: "), verdict.message
    assert "(HTTP 401, token_revoked)" in verdict.message


def test_another_jobs_credential_is_refused_at_once(server: ServerProcess,
                                                    tmp_path: Path) -> None:
    other = take_job(server, tmp_path, "true", with_input=False)[2]["delegated_token"]
    g = guest(server, tmp_path, take_job(server, tmp_path, "true", with_input=False),
              deadline_s=20, token=other)
    started = time.monotonic()
    assert g.nested.run_single() == 0  # the payload ran; failing beats did not stop it
    assert time.monotonic() - started < 10  # a refusal is not waited out
    verdict = g.verdict(tmp_path)
    assert not verdict.uploaded and verdict.exit_code == 0
    assert verdict.message.startswith("the server refused the results: this credential was "
                                      f"delegated for another job, not {g.uid}")
    assert verdict.message.endswith("(HTTP 403, forbidden_delegated)")


def test_an_outage_past_the_deadline_ends_with_a_verdict_that_names_it(
        server: ServerProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    taken = take_job(server, tmp_path, "true", with_input=False)
    server.stop()  # for longer than the job has left
    g = guest(server, tmp_path, taken, deadline_s=3)
    deadline = g.nested.deadline
    assert g.nested.run_single() == 0
    assert deadline <= time.monotonic() < deadline + 2  # gave up at the deadline
    verdict = g.verdict(tmp_path)
    assert not verdict.uploaded and verdict.exit_code == 0
    assert verdict.fault == Fault.SERVER  # the worker gives the job back, not the user's
    assert verdict.message.startswith(f"the results were not delivered: the upload of job "
                                      f"{g.uid}'s results: the server did not answer for ")
    assert "until the job's wall-clock deadline; last: PUT" in verdict.message
    assert "no answer (ConnectionRefusedError)" in verdict.message
    assert said(caplog, "progress beats fail") == 1
    assert not (g.work_dir / g.uid).exists()


def test_an_attempt_never_waits_past_the_deadline(server: ServerProcess) -> None:
    """A connection that is taken and never answered (the host's relay, when the server's
    machine is unreachable) waits its socket timeout, but not past the deadline."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        api = Server(f"https://127.0.0.1:{silent.getsockname()[1]}", server.ca, "token",
                     timeout=60, backoff=FAST, deadline=time.monotonic() + 2)
        started = time.monotonic()
        with pytest.raises(GuestError) as e:
            api.pilot_work("p")
    assert e.value.code == OUTAGE and time.monotonic() - started < 5
    assert "the server did not answer for " in e.value.message
    assert "no answer (TimeoutError)" in e.value.message


@pytest.mark.parametrize("status, code, transient", [
    (0, "unreachable", True), (500, "error", True), (502, "http_error", True),
    (503, "error", True), (408, "error", True), (429, "error", True),
    (0, "tls_error", False), (0, "checksum_mismatch", False), (400, "error", False),
    (401, "token_revoked", False), (403, "forbidden_delegated", False),
    (404, "not_found", False), (409, "not_active", False), (413, "too_large", False),
])
def test_what_is_waited_out_is_the_outer_workers_rule(status: int, code: str,
                                                      transient: bool) -> None:
    got = failure_status(GuestError("x", status, code))
    assert (got in (0, 503)) is transient


def test_the_deadline_counts_from_the_guests_boot_less_a_reserve() -> None:
    now = time.monotonic()
    assert job_deadline(600, up_s=30) - now == pytest.approx(600 - 30 - 10, abs=1)
    assert job_deadline(20) - now == pytest.approx(18, abs=1)  # a tenth of a short one


def test_a_pilot_waits_out_an_outage_and_serves_on(server: ServerProcess, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    admin = server.client()
    admin.create_app("root", kind="shared")
    pilot = admin.submit(template=TEMPLATE, pilot=True, pilot_idle_s=2)
    worker, host = vm_capable_worker(server, admin, f"outage-{uuid.uuid4().hex[:8]}")
    work = worker.request_work(host)["work"]
    assert work["uid"] == pilot["uid"]
    g = guest(server, tmp_path, (admin, worker, work), pilot_idle_s=2)
    job = admin.submit("root", command="echo served > out.txt; sleep 1")
    thread, got = in_background(g.nested.run_pilot)
    wait_for(lambda: (g.work_dir / job["uid"] / "run" / "out.txt").exists())
    server.stop()  # while the pilot's job runs: its upload waits
    wait_for(lambda: said(caplog, f"job {job['uid']}'s results: PUT") == 1, timeout=20)
    server.start()
    thread.join(60)
    assert got == [1]
    assert admin.get_work(job["uid"])["status"] == "COMPLETED"
    verdict = g.verdict(tmp_path)
    assert (verdict.exit_code, verdict.message, verdict.uploaded) == \
        (0, "pilot served 1 job(s)", True)
    assert said(caplog, f"job {job['uid']}'s results: the server answers again") == 1
