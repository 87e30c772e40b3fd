"""Native jobs run in a real sandbox (issue 13, hole 1): hostile payloads through the real
worker (``xwvm worker run --hypervisor none``) against a real server over TLS.

Each payload is what an attacker would submit: it reads another job's private input from
the worker's data cache through ``../``, the worker's credential (its path taken from
``/proc/$PPID/cmdline``), writes outside its directory, forks without end, fills the
disk, reaches a LAN device (127.0.0.2 stands in for one) and leaves a process behind.
And the refusal path: a worker whose bubblewrap is missing says so in its host record
and refuses the native job a server sends anyway.
"""

from __future__ import annotations

import os
import socket
import tarfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support import appkeys
from tests.support.processes import ServerProcess, WorkerProcess
from xwvm.client.sdk import ApiError, Client
from xwvm.protocol.messages import JobDescription
from xwvm.worker import facts, sandbox
from xwvm.worker.credential import Credential
from xwvm.worker.pull import Worker, WorkerOptions

SECRET = "victim-private-input-7f3a"
@pytest.fixture(autouse=True)
def _root_and_bubblewrap() -> None:
    """Not a skip: CI runs as root and scripts/install-system.sh installs bubblewrap."""
    assert os.geteuid() == 0, "the sandbox tests run as root (as CI does)"
    assert sandbox.bwrap_path() is not None, "bubblewrap missing: run scripts/install-system.sh"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    s = ServerProcess(tmp_path_factory.mktemp("sandbox")).init().start()
    yield s
    s.stop()


def credential(server: ServerProcess, path: Path) -> Credential:
    # Public: it takes every user's jobs (the victim's and the attacker's alike).
    cred = server.client().enroll_worker(public=True)
    c = Credential(server=server.url, login=cred["login"], password=cred["password"],
                   ca_pem=server.ca.read_text())
    c.save(path)
    return c


def app(client: Client, tmp: Path, name: str, script: str) -> str:
    path = tmp / f"{name}.sh"
    path.write_text("#!/bin/sh\n" + script)
    data = client.upload_data(path)
    return appkeys.create_signed_app(client, f"{name}{abs(hash(tmp)) % 10**8}",
                                     {"linux/x86_64": data["uid"]})["name"]


def results(client: Client, uid: str, tmp: Path) -> dict[str, bytes]:
    archive = client.download_result(uid, tmp / f"{uid}.tgz")
    with tarfile.open(archive) as tar:
        return {m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
                for m in tar.getmembers() if m.isfile()}


def run_jobs(server: ServerProcess, tmp: Path, jobs: list[str], client: Client,
             name: str) -> tuple[list[dict], WorkerProcess]:
    credential(server, tmp / f"{name}.cred")
    worker = WorkerProcess(tmp, tmp / f"{name}.cred", name,
                           extra=["--hypervisor", "none", "--max-jobs", str(len(jobs)),
                                  "--trusted-key", str(appkeys.public_key())])
    worker.start()
    try:
        done = client.wait(jobs, timeout=90)
    except ApiError:
        pytest.fail(f"{[client.get_work(j) for j in jobs]}\n{worker.log}")
    finally:
        assert worker.stop(timeout=60) is not None
    return done, worker


HOSTILE = """\
echo "uid: $(id -u)"
echo "cache: $(cat ../../../cache/* ../../cache/* ../../../cache/*/* 2>/dev/null \
    | grep -c victim-private)"
cmd=$(tr '\\0' ' ' < /proc/$PPID/cmdline)
echo "parent: $cmd"
cred=$(echo "$cmd" | sed -n 's/.*--credential \\([^ ]*\\).*/\\1/p')
[ -n "$cred" ] && cat "$cred"
for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done > procs.txt
for f in $(grep -o -- '--credential [^ ]*' procs.txt | cut -d' ' -f2); do cat "$f"; done
cat "$WORKER_CRED" 2>/dev/null && echo "cred: read" || echo "cred: unreadable"
ls "$WORKER_DIR" >/dev/null 2>&1 && echo "workdir: visible" || echo "workdir: invisible"
echo pwned > "$OUTSIDE/planted" 2>/dev/null && echo "outside: written" \
    || echo "outside: refused"
python3 - "$LAN_PORT" "$SERVER_PORT" <<'PY'
import socket, sys
for label, host, port in (("lan", "127.0.0.2", sys.argv[1]),
                          ("server", "127.0.0.1", sys.argv[2])):
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
        print(f"reach {label}: yes")
    except OSError:
        print(f"reach {label}: no")
PY
setsid sh -c "sleep $LINGER" </dev/null >/dev/null 2>&1 &
echo done
"""


def test_a_hostile_payload_sees_nothing_of_the_worker_and_leaves_nothing_behind(
        server: ServerProcess, tmp_path: Path) -> None:
    admin, victim, mallory = _victim_and_mallory(server)
    private = tmp_path / "private.txt"
    private.write_text(SECRET + "\n")
    data = victim.upload_data(private, access_rights="700")
    first = victim.submit(app(admin, tmp_path, "cat", "cat private.txt\n"),
                          inputs=[{"data": data["uid"], "name": "private.txt"}])["uid"]
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o777)
    outside.chmod(0o777)
    name = "sbx1"
    linger = f"{4000 + os.getpid() % 1000}.{time.time_ns() % 10**6}"  # this run's own
    with _lan_device() as (lan_port, touched):
        env = {"WORKER_CRED": str(tmp_path / f"{name}.cred"),
               "WORKER_DIR": str(tmp_path / name), "OUTSIDE": str(outside),
               "LAN_PORT": str(lan_port), "SERVER_PORT": str(server.port),
               "LINGER": linger}
        hostile = mallory.submit(app(admin, tmp_path, "hostile", HOSTILE), env=env,
                                 hold=True)["uid"]
        # The victim's job first: its private input is in the worker's data cache.
        done, worker = run_jobs(server, tmp_path, [first], admin, name)
        mallory.work_action(hostile, "release")
        done += run_jobs(server, tmp_path, [hostile], admin, name)[0]
    assert [w["status"] for w in done] == ["COMPLETED", "COMPLETED"], \
        ([w.get("error") for w in done], worker.log)
    files = results(mallory, hostile, tmp_path)
    _assert_the_payload_saw_nothing(files, Credential.load(tmp_path / f"{name}.cred").password,
                                    outside)
    assert touched == [], "the payload reached the LAN device"
    survivors = [p for p in os.listdir("/proc") if p.isdigit()
                 and linger.encode() in _cmdline(p)]
    assert survivors == [], "a payload process outlived its job"


def _victim_and_mallory(server: ServerProcess) -> tuple[Client, Client, Client]:
    """(the admin, the victim, mallory), both users logged in."""
    admin = server.client()
    admin.create_user("victim", "victim-password-1", "standard")
    admin.create_user("mallory", "mallory-password-1", "standard")
    victim, mallory = Client(server.url, server.ca), Client(server.url, server.ca)
    victim.login("victim", "victim-password-1")
    mallory.login("mallory", "mallory-password-1")
    return admin, victim, mallory


@contextmanager
def _lan_device() -> Iterator[tuple[int, list[str]]]:
    """A listening device on the LAN (127.0.0.2): its port, and the peers that reached it."""
    lan = socket.create_server(("127.0.0.2", 0))
    lan.settimeout(0.2)
    touched: list[str] = []

    def watch() -> None:
        while not stop.is_set():
            try:
                conn, peer = lan.accept()
            except OSError:
                continue
            touched.append(str(peer))
            conn.close()
    stop = threading.Event()
    threading.Thread(target=watch, daemon=True).start()
    try:
        yield lan.getsockname()[1], touched
    finally:
        stop.set()
        lan.close()


def _assert_the_payload_saw_nothing(files: dict[str, bytes], password: str,
                                    outside: Path) -> None:
    """What the hostile payload printed and returned: nothing of the victim or the worker."""
    out = files["stdout.txt"].decode()
    everything = b"".join(files.values())
    assert f"uid: {sandbox.job_account().uid}" in out, out
    assert "cache: 0" in out, out
    assert SECRET.encode() not in everything
    assert password.encode() not in everything, "the worker's credential leaked"
    assert "--credential" not in out and "--credential" not in files["procs.txt"].decode()
    assert "cred: unreadable" in out and "workdir: invisible" in out, out
    assert "outside: refused" in out and not (outside / "planted").exists(), out
    assert "reach lan: no" in out and "reach server: no" in out, out
    assert "done" in out


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def count_cmdline(cmdline: bytes) -> int:
    return sum(1 for p in os.listdir("/proc") if p.isdigit() and _cmdline(p) == cmdline)


def test_a_fork_bomb_and_a_disk_filler_are_bounded(server: ServerProcess, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XWVM_JOB_MAX_PROCESSES", "40")
    monkeypatch.setenv("XWVM_JOB_MAX_FILE_MB", "4")
    admin = server.client()
    # Capped at 300 so that an unsandboxed run stays survivable.
    bomb = admin.submit(app(admin, tmp_path, "bomb", """\
exec python3 - <<'PY'
import os, time
made = 0
for _ in range(300):
    try:
        if os.fork() == 0:
            os.execvp("sleep", ["sleep", "7.77"])
        made += 1
    except OSError:
        pass
print(f"forked: {made}", flush=True)
time.sleep(2)
PY
"""), wall_clock_s=60)["uid"]
    filler = admin.submit(app(admin, tmp_path, "filler", """\
dd if=/dev/zero of=big bs=1M count=64 2>dd.txt
echo "big: $(stat -c %s big)"
"""), wall_clock_s=60)["uid"]
    peak, stop = [0], threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], count_cmdline(b"sleep\x007.77\x00"))
            stop.wait(0.05)
    threading.Thread(target=watch, daemon=True).start()
    try:
        done, worker = run_jobs(server, tmp_path, [bomb, filler], admin, "sbx2")
    finally:
        stop.set()
    assert [w["status"] for w in done] == ["COMPLETED", "COMPLETED"], \
        ([w.get("error") for w in done], worker.log)
    forked = results(admin, bomb, tmp_path)["stdout.txt"].decode()
    assert int(forked.split("forked: ")[1]) < 40, forked
    assert peak[0] <= 40, f"{peak[0]} processes of the fork bomb ran at once"
    files = results(admin, filler, tmp_path)
    out = files["stdout.txt"].decode()
    assert "big: 4194304" in out, out
    assert len(files.get("big", b"")) <= 4 << 20
    assert count_cmdline(b"sleep\x007.77\x00") == 0


def test_a_worker_without_bubblewrap_advertises_and_refuses_native_jobs(
        server: ServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(sandbox.BWRAP_ENV, str(tmp_path / "no-such-bwrap"))
    admin = server.client()
    marker = tmp_path / "ran"
    marker_dir = tmp_path
    marker_dir.chmod(0o777)
    job = admin.submit(app(admin, tmp_path, "touch", f"touch {marker}\n"))["uid"]
    cred = credential(server, tmp_path / "w.cred")
    w = Worker(cred, WorkerOptions(work_dir=tmp_path / "wd", name="nobwrap",
                                   hypervisor="none",
                                   trusted_keys=[appkeys.public_key()]))
    w._login()
    w.host = w._register()
    record = {h["name"]: h for h in admin.list_hosts()}["nobwrap"]["hypervisors"]["native"]
    assert record["usable"] is False and "bubblewrap" in record["reason"], record
    # A hostile (or old) server sends the job anyway.
    facts_now = facts.collect(tmp_path, "nobwrap", []).to_json()
    facts_now["hypervisors"] = {"native": {"usable": True, "accel": None, "reason": "lie"}}
    w.client.register_host({**facts_now, "uid": w.host})
    assigned = w.client.request_work(w.host)["work"]
    assert assigned["uid"] == job
    w.run_job(JobDescription.from_json(assigned))
    assert not marker.exists()
    after = admin.get_work(job)
    assert after["status"] == "ERROR" and "bubblewrap" in (after.get("error") or ""), after


PRELOAD_C = r"""
#include <stdio.h>
#include <unistd.h>
__attribute__((constructor)) static void seen(void) {
    FILE *f = fopen("/job/run/preload.log", "a");
    if (f) { fprintf(f, "%d %d\n", (int)getuid(), (int)geteuid()); fclose(f); }
}
"""


def test_the_jobs_environment_never_reaches_roots_helpers(server: ServerProcess,
                                                          tmp_path: Path) -> None:
    """Found by review: the job's variables were the environment of bubblewrap's root
    helpers (prlimit, setpriv): an LD_PRELOAD input ran as uid 0 inside the sandbox, with
    CAP_SETUID, and left a setuid-root shell in the job's directory. Now every process that
    loads the job's library runs as the job's account."""
    import shutil
    import subprocess
    if shutil.which("gcc") is None:
        pytest.fail("gcc is needed to build the hostile library (build-essential)")
    src = tmp_path / "evil.c"
    src.write_text(PRELOAD_C)
    lib = tmp_path / "evil.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    admin = server.client()
    evil = admin.upload_data(lib)
    job = admin.submit(app(admin, tmp_path, "preload", "cat preload.log\n"),
                       inputs=[{"data": evil["uid"], "name": "evil.so"}],
                       env={"LD_PRELOAD": "/job/run/evil.so"}, wall_clock_s=60)["uid"]
    done, worker = run_jobs(server, tmp_path, [job], admin, "sbx-env")
    assert done[0]["status"] == "COMPLETED", (done[0].get("error"), worker.log)
    seen = results(admin, job, tmp_path)["stdout.txt"].decode().split("\n")
    uids = {line.split()[0] for line in seen if line.strip()}
    assert uids and "0" not in uids, seen  # the library ran, never as root
    assert uids == {str(sandbox.job_account(create=False).uid)}, seen


def test_a_jobs_files_together_and_its_tmp_are_bounded(server: ServerProcess, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by review: RLIMIT_FSIZE caps one file, so 100 files of 20 MiB made 2 GB; and
    /tmp was an unsized tmpfs in the volunteer's memory. Now /tmp is the job's own folder
    on disk and all its files together are capped (XWVM_JOB_MAX_DISK_MB)."""
    monkeypatch.setenv("XWVM_JOB_MAX_FILE_MB", "4")
    monkeypatch.setenv("XWVM_JOB_MAX_DISK_MB", "12")
    admin = server.client()
    job = admin.submit(app(admin, tmp_path, "many", """\
stat -f -c %T /tmp > tmpfs.txt
for i in $(seq 1 40); do dd if=/dev/zero of=/tmp/f$i bs=1M count=3 2>/dev/null; done
sleep 30
"""), wall_clock_s=60)["uid"]
    done, worker = run_jobs(server, tmp_path, [job], admin, "sbx-disk")
    assert done[0]["status"] == "ERROR", (done[0], worker.log)
    assert "exceeded 12 MiB on disk" in done[0]["error"], done[0]["error"]
