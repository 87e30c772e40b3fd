"""Workers that die, stop or restart, and a server restarted mid-run: nothing is lost."""

from __future__ import annotations

import signal
import tarfile
import time
from collections import Counter
from pathlib import Path

from tests.e2e.conftest import eventually, make_app, start_workers, stop_all
from tests.support.processes import ServerProcess


def _running_on(admin, uid: str) -> str | None:
    w = admin.get_work(uid)
    return w["host"] if w["status"] == "RUNNING" else None


def test_killed_worker_job_is_rescheduled_on_another(server: ServerProcess,
                                                     tmp_path: Path) -> None:
    admin = server.client()
    make_app(admin, tmp_path, "slow", "sleep 4\necho done $1\n")
    uid = admin.submit("slow", args=["x"])["uid"]
    [first] = start_workers(server, admin, tmp_path / "a", 1)
    first_host = eventually(lambda: _running_on(admin, uid), what="job running")
    first.stop(signal.SIGKILL)
    [second] = start_workers(server, admin, tmp_path / "b", 1)
    try:
        [done] = admin.wait([uid], timeout=90)
    finally:
        second.stop()
    assert done["status"] == "COMPLETED" and done["retries"] == 1
    assert done["host"] != first_host
    moves = [(e["from"], e["to"]) for e in admin.events(uid) if e["kind"] == "transition"]
    assert ("RUNNING", "LOST") in moves and ("LOST", "PENDING") in moves
    assert any(e["kind"] == "host_lost" and e["object"] == first_host for e in admin.events())


def test_sigterm_gives_the_running_job_back(server: ServerProcess, tmp_path: Path) -> None:
    admin = server.client()
    make_app(admin, tmp_path, "long", "sleep 60\n")
    uid = admin.submit("long")["uid"]
    [worker] = start_workers(server, admin, tmp_path, 1)
    eventually(lambda: _running_on(admin, uid), what="job running")
    started = time.monotonic()
    code = worker.stop(signal.SIGTERM, timeout=30)
    assert code == 0, worker.log
    assert time.monotonic() - started < 15, "the worker stops promptly"
    job = admin.get_work(uid)
    # given back for the worker stopping: the retry counts, the host's health does not
    assert job["status"] == "PENDING" and job["retries"] == 1 and job["host"] is None
    back = [e for e in admin.events(uid) if e["kind"] == "transition"][-1]
    assert (back["from"], back["to"]) == ("RUNNING", "PENDING")
    assert "given back by its worker (stopping)" in back["detail"]
    [host] = [h for h in admin.list_hosts() if h["name"] == worker.name]
    assert host["health"]["fault_streak"] == 0
    assert not list((worker.work_dir / "jobs").iterdir()), "sandbox removed"


def test_restarted_worker_requeues_its_previous_job_and_cleans_up(server: ServerProcess,
                                                                  tmp_path: Path) -> None:
    admin = server.client()
    make_app(admin, tmp_path, "once", "sleep 30\n")
    uid = admin.submit("once", max_retries=3)["uid"]
    [worker] = start_workers(server, admin, tmp_path, 1)
    eventually(lambda: _running_on(admin, uid), what="job running")
    worker.stop(signal.SIGKILL)
    sandbox = worker.work_dir / "jobs" / uid
    assert sandbox.exists(), "the killed worker left its sandbox"
    admin.work_action(uid, "abort")  # so the restarted worker finds nothing to run
    worker.start()
    try:
        eventually(lambda: not sandbox.exists(), what="leftover sandbox removed")
    finally:
        worker.stop()


def test_server_restart_mid_run_loses_nothing(server: ServerProcess, tmp_path: Path) -> None:
    admin = server.client()
    make_app(admin, tmp_path, "echo", "sleep 0.2\necho $1\n")
    jobs = {admin.submit("echo", args=[str(i)])["uid"]: i for i in range(40)}
    workers = start_workers(server, admin, tmp_path, 2)
    try:
        eventually(lambda: sum(w["status"] == "COMPLETED"
                               for w in admin.list_works(list(jobs))) >= 5,
                   what="first jobs done")
        server.stop()
        time.sleep(2)
        server.start()
        admin = server.client()
        done = admin.wait(list(jobs), timeout=180)
    finally:
        stop_all(workers)
    assert Counter(w["status"] for w in done) == {"COMPLETED": 40}
    for w in done[:40:7]:
        archive = admin.download_result(w["uid"], tmp_path / "r.tgz")
        with tarfile.open(archive) as tar:
            assert tar.extractfile("stdout.txt").read().decode() == f"{jobs[w['uid']]}\n"


def test_wall_clock_limit_is_enforced(server: ServerProcess, tmp_path: Path) -> None:
    admin = server.client()
    make_app(admin, tmp_path, "forever", "echo started\nsleep 120\n")
    uid = admin.submit("forever", wall_clock_s=2)["uid"]
    [worker] = start_workers(server, admin, tmp_path, 1)
    try:
        [job] = admin.wait([uid], timeout=60)
    finally:
        worker.stop()
    assert job["status"] == "ERROR" and "wall-clock limit of 2 s exceeded" in job["error"]
    archive = admin.download_result(uid, tmp_path / "r.tgz")
    import tarfile
    with tarfile.open(archive) as tar:
        assert tar.extractfile("stdout.txt").read() == b"started\n"


def test_abort_stops_the_running_job(server: ServerProcess, tmp_path: Path) -> None:
    admin = server.client()
    make_app(admin, tmp_path, "sleeper", "sleep 120\n")
    uid = admin.submit("sleeper")["uid"]
    [worker] = start_workers(server, admin, tmp_path, 1)
    try:
        eventually(lambda: _running_on(admin, uid), what="job running")
        assert admin.work_action(uid, "abort")["status"] == "ABORTED"
        eventually(lambda: not (worker.work_dir / "jobs" / uid).exists(), timeout=30,
                   what="worker stopped the aborted job")
        follow = admin.submit("sleeper", wall_clock_s=1)["uid"]
        [job] = admin.wait([follow], timeout=60)
        assert job["status"] == "ERROR", "the worker moved on to the next job"
    finally:
        stop_all([worker])
