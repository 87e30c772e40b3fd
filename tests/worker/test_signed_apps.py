"""A native app runs on a volunteer's host only when a key the worker trusts signed it
(issue 13, hole 3): the server, or an admin account, alone cannot run code there.

Through a real server over TLS, the real CLI (``xwvm app send --sign-key``, ``xwvm app
sign``) and a real ``xwvm worker run --hypervisor none`` process. The attacks come from
whoever controls the server: an unsigned app, an app signed by a key of their own, a
binary swapped in the blob store after signing, and a manifest edited in the database
to name a new binary. The scheduler sends a native app's job only to workers that
trust one of its signers (the host record's ``app_keys``), so an unsigned or untrusted
app waits for one instead of failing; a server that sends it anyway meets the worker's
own refusal. Each refusal ends in ERROR with the reason, and the payload (which would
leave a marker file) must never run.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Any

from tests.support import appkeys
from tests.support.processes import ServerProcess, run_cli
from xwvm.client.sdk import ApiError
from xwvm.protocol.messages import JobDescription
from xwvm.worker.credential import Credential
from xwvm.worker.pull import Worker, WorkerOptions


def payload(tmp: Path, marker: Path, name: str = "tool.sh") -> Path:
    script = tmp / name
    script.write_text(f"#!/bin/sh\ntouch {marker} 2>/dev/null\necho ran\n")
    return script


def run_worker(server: ServerProcess, home: Path, tmp: Path, *extra: str) -> str:
    """One job on a fresh native worker trusting the tests' key; its log."""
    cred = tmp / "w.cred"
    if not cred.exists():
        run_cli(["worker", "enroll", "-o", str(cred)], home)
    proc = run_cli(["worker", "run", "--credential", str(cred), "--work-dir",
                    str(tmp / "wd"), "--name", "volunteer", "--hypervisor", "none",
                    "--max-jobs", "1", "--max-idle", "30", *extra], home, timeout=120)
    return proc.stdout + proc.stderr


def trusting(*extra: str) -> tuple[str, ...]:
    return ("--trusted-key", str(appkeys.public_key()), *extra)


def job_of(server: ServerProcess, app: str) -> dict[str, Any]:
    return server.client().submit(app=app)


def refused(server: ServerProcess, job: dict[str, Any], log: str) -> str:
    done = server.client().get_work(job["uid"])
    assert done["status"] == "ERROR", (done, log)
    assert "refused by this worker" in done["error"], done["error"]
    assert done["result"] is None and done["exit_code"] is None  # nothing ran
    return done["error"]


def ran(home: Path, job: dict[str, Any], tmp: Path) -> bool:
    """The payload ran: its results hold what it printed (a marker outside the job's
    directory would be invisible from inside the native sandbox)."""
    out = tmp / "results"
    run_cli(["results", job["uid"], "-o", str(out)], home)
    return (out / "stdout.txt").read_text() == "ran\n"


def send(home: Path, name: str, script: Path, *extra: str) -> None:
    run_cli(["app", "send", name, "--file", str(script), *extra], home)


def not_sent(server: ServerProcess, home: Path, tmp: Path, job: dict[str, Any],
             *extra: str) -> str:
    """The scheduler keeps the job from a worker that trusts none of its app's signers:
    it stays PENDING, nothing ran, and nobody is blamed. The worker's log."""
    log = run_worker(server, home, tmp, *extra, "--max-idle", "4")
    done = server.client().get_work(job["uid"])
    assert done["status"] == "PENDING" and done["error"] is None, (done, log)
    return log


def refused_when_sent(server: ServerProcess, tmp: Path, job: dict[str, Any],
                      trusted: list[Path]) -> str:
    """A hostile (or older) server sends the job anyway, to a host whose record says
    nothing of its keys: the worker itself refuses, names why, and runs nothing."""
    from xwvm.worker import facts
    admin = server.client()
    enrolled = admin.enroll_worker()
    cred = Credential(server=server.url, login=enrolled["login"],
                      password=enrolled["password"], ca_pem=server.ca.read_text())
    w = Worker(cred, WorkerOptions(work_dir=tmp / "sent", name="sent", hypervisor="none",
                                   trusted_keys=trusted))
    w._login()
    record = facts.collect(tmp, "sent", []).to_json()
    record["hypervisors"] = {"native": {"usable": True, "accel": None, "reason": "old"}}
    w.host = w.client.register_host(record)["uid"]
    assigned = w.client.request_work(w.host)["work"]
    assert assigned["uid"] == job["uid"]
    w.run_job(JobDescription.from_json(assigned))
    return refused(server, job, "")


def test_an_app_signed_by_a_trusted_key_runs(server: ServerProcess, cli_home: Path,
                                             tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    send(cli_home, "good", payload(tmp_path, marker), "--sign-key",
         str(appkeys.private_key()))
    app = server.client().get_app("good")
    assert app["signed"] and len(app["signatures"]) == 1
    job = job_of(server, "good")
    log = run_worker(server, cli_home, tmp_path, *trusting())
    done = server.client().get_work(job["uid"])
    assert done["status"] == "COMPLETED", (done["error"], log)
    assert ran(cli_home, job, tmp_path)


def test_an_unsigned_app_is_refused_naming_the_missing_signature(
        server: ServerProcess, cli_home: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    send(cli_home, "unsigned", payload(tmp_path, marker))
    job = job_of(server, "unsigned")
    not_sent(server, cli_home, tmp_path, job, *trusting())
    error = refused_when_sent(server, tmp_path, job, [appkeys.public_key()])
    assert "unsigned" in error and "--trusted-key" in error
    assert not marker.exists()


def test_a_worker_without_trusted_keys_refuses_every_native_app(
        server: ServerProcess, cli_home: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    send(cli_home, "signed", payload(tmp_path, marker), "--sign-key",
         str(appkeys.private_key()))
    job = job_of(server, "signed")
    log = not_sent(server, cli_home, tmp_path, job)
    assert "no --trusted-key" in log  # said at start
    error = refused_when_sent(server, tmp_path, job, [])
    assert "does not trust" in error and "trusted: none" in error
    assert not marker.exists()


def test_an_app_signed_by_an_untrusted_key_is_refused(
        server: ServerProcess, cli_home: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    script = payload(tmp_path, marker)
    send(cli_home, "mallory", script)
    # The attacker's own key, made and used with the real tools.
    run_cli(["admin", "keygen", "-o", str(tmp_path / "evil")], cli_home)
    run_cli(["app", "sign", "mallory", "--key",
             str(tmp_path / "evil" / "template-signing-key.pem"), "--file", str(script)],
            cli_home)
    assert server.client().get_app("mallory")["signed"]
    job = job_of(server, "mallory")
    not_sent(server, cli_home, tmp_path, job, *trusting())
    error = refused_when_sent(server, tmp_path, job, [appkeys.public_key()])
    assert "signed only by keys this worker does not trust" in error
    assert not marker.exists()


def _blob(server: ServerProcess, sha: str) -> Path:
    return server.data_dir / "blobs" / sha[:2] / sha[2:4] / sha


def test_a_binary_swapped_on_the_server_after_signing_is_refused(
        server: ServerProcess, cli_home: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    send(cli_home, "swapped", payload(tmp_path, tmp_path / "honest"), "--sign-key",
         str(appkeys.private_key()))
    [binary] = server.client().get_app("swapped")["signed_binaries"]
    blob = _blob(server, binary["sha256"])
    evil = payload(tmp_path, marker, "evil.sh").read_bytes()
    blob.chmod(0o600)  # same size: the server serves it whole, as it would any blob
    blob.write_bytes(evil + b"#" * (binary["size"] - len(evil)))
    job = job_of(server, "swapped")
    log = run_worker(server, cli_home, tmp_path, *trusting())
    done = server.client().get_work(job["uid"])
    assert done["status"] == "ERROR", (done, log)
    assert "sha256" in done["error"], done["error"]
    assert done["result"] is None
    assert not marker.exists() and not (tmp_path / "honest").exists()


def test_a_manifest_altered_on_the_server_fails_verification(
        server: ServerProcess, cli_home: Path, tmp_path: Path) -> None:
    """The attacker puts a new binary in the blob store and edits the database so that
    the app's binary has the new sha256 and size: the server's manifest now names the new
    binary (and agrees with what it serves), but the admin's signature is over the old."""
    marker = tmp_path / "ran"
    send(cli_home, "altered", payload(tmp_path, tmp_path / "honest"), "--sign-key",
         str(appkeys.private_key()))
    admin = server.client()
    [binary] = admin.get_app("altered")["signed_binaries"]
    evil = payload(tmp_path, marker, "evil.sh").read_bytes()
    sha = hashlib.sha256(evil).hexdigest()
    _blob(server, sha).parent.mkdir(parents=True, exist_ok=True)
    _blob(server, sha).write_bytes(evil)
    with sqlite3.connect(server.data_dir / "xwvm.db") as db:
        db.execute("UPDATE data SET sha256 = ?, size = ? WHERE sha256 = ?",
                   (sha, len(evil), binary["sha256"]))
    assert admin.get_app("altered")["signed_binaries"][0]["sha256"] == sha
    job = job_of(server, "altered")
    log = run_worker(server, cli_home, tmp_path, *trusting())
    error = refused(server, job, log)
    assert "does not verify" in error and "altered" in error
    assert not marker.exists() and not (tmp_path / "honest").exists()


def test_the_owner_may_opt_out_and_run_unsigned_apps(
        server: ServerProcess, cli_home: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    send(cli_home, "optout", payload(tmp_path, marker))
    job = job_of(server, "optout")
    log = run_worker(server, cli_home, tmp_path, "--allow-unsigned-apps")
    assert server.client().get_work(job["uid"])["status"] == "COMPLETED", log
    assert ran(cli_home, job, tmp_path)


def test_the_server_stores_only_signatures_that_verify(server: ServerProcess,
                                                       tmp_path: Path) -> None:
    admin = server.client()
    data = admin.upload_data(payload(tmp_path, tmp_path / "x"))
    app = admin.create_app("checked", {"linux/x86_64": data["uid"]})
    assert not app["signed"]
    other = admin.create_app("other", {"linux/x86_64": data["uid"]})
    signed_other = appkeys.sign(admin, other)["signatures"][0]
    try:  # another app's signature, replayed
        admin.sign_app(app["uid"], signed_other["public_key"], signed_other["signature"])
        raise AssertionError("a signature over another manifest was stored")
    except ApiError as e:
        assert e.status == 400 and e.code == "bad_signature"
    admin.create_app("provided", kind="shared")
    try:
        appkeys.sign(admin, admin.get_app("provided"))
        raise AssertionError("a shared app was signed")
    except ApiError as e:
        assert e.code == "nothing_to_sign"


def test_a_command_for_an_app_the_worker_does_not_share_is_refused(
        server: ServerProcess, tmp_path: Path) -> None:
    """A shared app's command runs only for an app the worker's owner shares: a server
    that sends a command job to any host would otherwise run any code, signed or not."""
    marker = tmp_path / "ran"
    admin = server.client()
    admin.create_app("tools", kind="shared")
    job = admin.submit(app="tools", command=f"touch {marker}")
    enrolled = admin.enroll_worker()
    cred = Credential(server=server.url, login=enrolled["login"],
                      password=enrolled["password"], ca_pem=server.ca.read_text())
    w = Worker(cred, WorkerOptions(work_dir=tmp_path / "wd", name="liar", hypervisor="none",
                                   trusted_keys=[appkeys.public_key()]))
    w._login()
    from xwvm.worker import facts
    lie = facts.collect(tmp_path, "liar", ["tools"]).to_json()  # what the hostile server acts on
    lie["hypervisors"] = {"native": facts.native_entry(True).to_json()}
    w.host = w.client.register_host(lie)["uid"]
    assigned = w.client.request_work(w.host)["work"]
    assert assigned["uid"] == job["uid"]
    w.run_job(JobDescription.from_json(assigned))
    done = admin.get_work(job["uid"])
    assert done["status"] == "ERROR" and "does not provide" in done["error"], done
    assert not marker.exists()
