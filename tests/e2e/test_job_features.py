"""Native job features end to end: stdin, environment, hold/release, DATAREQUEST, projects."""

from __future__ import annotations

import tarfile
from pathlib import Path

from tests.e2e.conftest import make_app, start_workers, stop_all
from tests.support.processes import ServerProcess
from xwvm.client.sdk import Client


def _stdout(admin: Client, uid: str, tmp: Path) -> str:
    with tarfile.open(admin.download_result(uid, tmp / f"{uid}.tgz")) as tar:
        return tar.extractfile("stdout.txt").read().decode()  # type: ignore[union-attr]


def test_stdin_env_hold_and_data_request(server: ServerProcess, tmp_path: Path) -> None:
    admin = server.client()
    make_app(admin, tmp_path, "feat",
             'echo "env=$GREETING home=$(basename $HOME)"\ncat\nls\n')
    stdin = tmp_path / "in.txt"
    stdin.write_text("line from stdin\n")
    stdin_uid = admin.upload_data(stdin)["uid"]
    job = admin.submit("feat", env={"GREETING": "bonjour"}, stdin=stdin_uid)["uid"]
    held = admin.submit("feat", hold=True)["uid"]
    assert admin.get_work(held)["status"] == "WAITING"
    # Inputs declared before their content exists: the job waits in DATAREQUEST.
    late = admin.post("/data", {"name": "late.txt", "size": 5})
    waiting = admin.submit("feat", inputs=[{"data": late["uid"], "name": "late.txt"}])["uid"]
    assert admin.get_work(waiting)["status"] == "DATAREQUEST"
    workers = start_workers(server, admin, tmp_path, 1)
    try:
        [done] = admin.wait([job], timeout=60)
        assert done["status"] == "COMPLETED"
        out = _stdout(admin, job, tmp_path)
        assert out.startswith("env=bonjour home=run\nline from stdin\n")
        assert "in.txt" not in out, "stdin is not copied into the job directory"
        assert admin.get_work(held)["status"] == "WAITING", "held jobs are not scheduled"
        assert admin.work_action(held, "release")["status"] == "PENDING"
        late_file = tmp_path / "late.txt"
        late_file.write_text("later")
        admin.request("PUT", f"/data/{late['uid']}/content", data=late_file.read_bytes())
        done = admin.wait([held, waiting], timeout=60)
        assert [w["status"] for w in done] == ["COMPLETED", "COMPLETED"]
        assert "late.txt" in _stdout(admin, waiting, tmp_path)
    finally:
        stop_all(workers)
    moves = [(e["from"], e["to"]) for e in admin.events(waiting) if e["kind"] == "transition"]
    assert moves[:2] == [(None, "DATAREQUEST"), ("DATAREQUEST", "PENDING")]


def test_project_worker_runs_only_its_groups_jobs(server: ServerProcess,
                                                  tmp_path: Path) -> None:
    admin = server.client()
    admin.create_group("cms")
    admin.create_user("alice", "alice-password", "standard", "cms")
    admin.create_user("bob", "bob-password-1", "standard")
    make_app(admin, tmp_path, "who", "id -u >/dev/null; echo ok\n")
    alice, bob = Client(server.url, server.ca), Client(server.url, server.ca)
    alice.login("alice", "alice-password")
    bob.login("bob", "bob-password-1")
    a_job = alice.submit("who", access_rights="750")["uid"]
    b_job = bob.submit("who")["uid"]
    cred = admin.enroll_worker(project="cms")
    from tests.support.processes import WorkerProcess
    from xwvm.worker.credential import Credential
    path = tmp_path / "cms.cred"
    Credential(server=server.url, login=cred["login"], password=cred["password"],
               ca_pem=server.ca.read_text()).save(path)
    worker = WorkerProcess(tmp_path, path, "cmsw").start()
    try:
        [done] = alice.wait([a_job], timeout=60)
        assert done["status"] == "COMPLETED"
        assert bob.get_work(b_job)["status"] == "PENDING", "bob is not in cms"
    finally:
        worker.stop()
