"""Every job has a hard wall-clock limit, even one that names none (issue 13, hole 6).

The worker enforces its own ceiling (``--max-wall-clock``) on jobs without a limit or
with a longer one; the server's reaper ends a RUNNING job without a limit after the
server's default. Both against a real server over TLS, with the limits set short.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.support import appkeys
from tests.support.processes import ServerProcess, WorkerProcess, enrolled_credential
from xwvm.client.sdk import Client
from xwvm.worker import facts
from xwvm.worker.credential import Credential


def wait_for(fn, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"


def sleep_arg(pidfile: Path) -> str:
    """The payload's own ``sleep`` argument: native payloads run sandboxed (no file
    outside their directory), so the test finds the payload by its command line."""
    return f"60.{abs(hash(str(pidfile))) % 10**6}"


def payload_pid(pidfile: Path) -> int | None:
    want = f"sleep\0{sleep_arg(pidfile)}\0".encode()
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and (p / "cmdline").read_bytes() == want:
                return int(p.name)
        except OSError:
            continue
    return None


def sleeper_app(admin: Client, tmp: Path, pidfile: Path) -> str:
    script = tmp / "sleeper.sh"
    script.write_text(f"#!/bin/sh\nexec sleep {sleep_arg(pidfile)}\n")
    data = admin.upload_data(script)
    return appkeys.create_signed_app(admin, f"sleeper{abs(hash(tmp)) % 10**8}",
                                     {"linux/x86_64": data["uid"]})["name"]


def credential(server: ServerProcess, path: Path) -> Credential:
    return enrolled_credential(server, path)


def test_the_worker_ends_a_job_without_a_limit_at_its_own_ceiling(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "srv").init().start()
    worker = None
    try:
        admin = server.client()
        pidfile = tmp_path / "payload.pid"
        job = admin.submit(app=sleeper_app(admin, tmp_path, pidfile))
        assert job.get("wall_clock_s") is None
        credential(server, tmp_path / "w.cred")
        worker = WorkerProcess(tmp_path, tmp_path / "w.cred", "wc",
                               extra=["--hypervisor", "none", "--max-wall-clock", "3"]).start()
        pid = int(wait_for(lambda: payload_pid(pidfile), 30,
                           "the payload to start"))
        started = time.monotonic()
        done = wait_for(lambda: (w := admin.get_work(job["uid"]))["status"] == "ERROR" and w,
                        30, f"the job to end in ERROR\n{worker.log}")
        assert time.monotonic() - started < 15
        assert "wall-clock limit of 3 s exceeded" in done["error"]
        assert not alive(pid)
    finally:
        if worker:
            worker.stop()
        server.stop()


def test_a_longer_job_limit_is_capped_and_a_shorter_one_kept(tmp_path: Path) -> None:
    from xwvm.worker.pull import effective_wall_clock
    assert effective_wall_clock(None, 3) == 3
    assert effective_wall_clock(3600, 3) == 3
    assert effective_wall_clock(2, 3) == 2
    assert effective_wall_clock(0, 3) == 3  # a hostile server's 0 is no "unlimited"
    assert effective_wall_clock("x", 3) == 3


def test_the_reaper_ends_a_running_job_without_a_limit(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "srv", env={"XWVM_DEFAULT_WALL_CLOCK_S": "2",
                                                  "XWVM_WALL_CLOCK_GRACE_S": "1"})
    server.init().start()
    try:
        admin = server.client()
        job = admin.submit(app=sleeper_app(admin, tmp_path, tmp_path / "unused"))
        # A worker that takes the job and then only beats (a hung or hostile one).
        w = Client(server.url, str(server.ca))
        credential(server, tmp_path / "w.cred").login_with(w)
        out = facts.collect(tmp_path, "silent", []).to_json()
        out["hypervisors"] = {"native": facts.native_entry(True, unsigned_apps=True).to_json()}
        host = w.register_host(out)["uid"]
        desc = w.request_work(host)["work"]
        assert desc["uid"] == job["uid"]
        assert desc["wall_clock_s"] == 2, "the worker is told the limit the reaper applies"

        def ended() -> dict | None:
            w.heartbeat(host, [job["uid"]])
            now = admin.get_work(job["uid"])
            return now if now["status"] == "ERROR" else None

        done = wait_for(ended, 20, "the reaper to end the job")
        assert "wall-clock limit of 2 s exceeded" in done["error"]
    finally:
        server.stop()
