"""Delegated VM credentials over real HTTP: what a nested worker may do, for which jobs,
and until when. A worker account takes the VM job as a VM-capable host would; the token
it receives is the one the context ISO carries into the VM."""

from __future__ import annotations

import base64
import json
import tarfile
import time
from pathlib import Path

import pytest

from tests.support.processes import ServerProcess
from tests.templates.conftest import MiB, push, random_file
from xwvm.client.sdk import ApiError, Client


def vm_capable_worker(server: ServerProcess, owner: Client, name: str) -> tuple[Client, str]:
    """A worker the owner enrolled (it runs only the owner's jobs), with a hypervisor."""
    cred = owner.enroll_worker()
    c = Client(server.url, server.ca)
    c.login(cred["login"], cred["password"])
    host = c.register_host({"name": name, "os": "linux", "arch": "x86_64", "cpus": 2,
                            "memory_mb": 4096, "disk_mb": 100000,
                            "hypervisors": {"libvirt": {"usable": True, "accel": "tcg",
                                                        "reason": "test"}}})
    return c, host["uid"]


@pytest.fixture(scope="module")
def world(shared_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> dict:
    admin = shared_server.client()
    tmp = tmp_path_factory.mktemp("deleg")
    files = {"disk": random_file(tmp / "d.qcow2", MiB), "kernel": random_file(tmp / "k", 4096),
             "initrd": random_file(tmp / "i", 4096)}
    push(admin, "deleg-tpl", "1.0", files)
    admin.create_app("root", kind="shared")
    for login in ("alice", "bob"):
        admin.create_user(login, f"{login}-password", "standard")
    return {"admin": admin, "tmp": tmp}


def login(server: ServerProcess, who: str) -> Client:
    c = Client(server.url, server.ca)
    c.login(who, f"{who}-password")
    return c


def as_token(server: ServerProcess, token: str) -> Client:
    return Client(server.url, server.ca, token=token)


def test_single_vm_job_credential(shared_server: ServerProcess, world: dict) -> None:
    alice, bob = login(shared_server, "alice"), login(shared_server, "bob")
    data = world["tmp"] / "in.txt"
    data.write_text("input for the VM")
    inp = alice.upload_data(data, access_rights="700")
    job = alice.submit(template="deleg-tpl", command="cat in.txt", access_rights="700",
                       inputs=[{"data": inp["uid"], "name": "in.txt"}])
    other = bob.submit(template="deleg-tpl", command="true", access_rights="700")
    worker, host = vm_capable_worker(shared_server, alice, "deleg-h1")
    desc = worker.request_work(host)["work"]
    assert desc["uid"] == job["uid"] and desc["owner"] == "alice"
    assert desc["template"]["name"] == "deleg-tpl" and desc["command"] == "cat in.txt"
    nested = as_token(shared_server, desc["delegated_token"])

    assert nested.get_work(job["uid"])["uid"] == job["uid"]
    path = nested.download_data(inp["uid"], world["tmp"] / "got.txt")
    assert path.read_text() == "input for the VM"
    assert nested.progress(job["uid"], "running")["stop"] is False
    for call in (lambda: nested.get_work(other["uid"]), lambda: nested.list_works(),
                 lambda: nested.submit(template="deleg-tpl", command="x"),
                 lambda: nested.report(job["uid"], "COMPLETED", 0),
                 lambda: nested.chmod(job["uid"], "777")):
        with pytest.raises(ApiError) as e:
            call()
        assert e.value.status == 403, e.value.message

    archive = world["tmp"] / "r.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(data, arcname="stdout.txt")
    nested.upload_result(job["uid"], archive)
    assert worker.report(job["uid"], "COMPLETED", 0)["status"] == "COMPLETED"
    with pytest.raises(ApiError) as e:
        nested.get_work(job["uid"])
    assert e.value.status == 401 and e.value.code == "token_revoked"


def test_pilot_takes_only_its_owners_shared_app_jobs(shared_server: ServerProcess,
                                                      world: dict) -> None:
    alice, bob = login(shared_server, "alice"), login(shared_server, "bob")
    worker, host = vm_capable_worker(shared_server, alice, "deleg-h2")
    bob_job = bob.submit("root", command="root -b -q x.C")
    pilot = alice.submit(template="deleg-tpl", pilot=True, pilot_idle_s=30)
    desc = worker.request_work(host)["work"]
    assert desc["uid"] == pilot["uid"] and desc["pilot"] is True and desc["pilot_idle_s"] == 30
    nested = as_token(shared_server, desc["delegated_token"])
    assert nested.pilot_work(pilot["uid"]) is None, "bob's is not"
    mine = [alice.submit("root", command=f"root -b -q a{i}.C")["uid"] for i in range(3)]
    taken = [nested.pilot_work(pilot["uid"]) for _ in range(3)]
    assert [t.uid for t in taken] == mine
    assert all(t.command.startswith("root -b -q") for t in taken)
    assert nested.report(mine[0], "ERROR", None, "macro failed")["status"] == "ERROR"
    with pytest.raises(ApiError) as e:
        nested.get_work(bob_job["uid"])
    assert e.value.status == 403
    # The pilot ends: its credential with it, and the jobs it still ran go back to the queue.
    worker.report(pilot["uid"], "ERROR", None, "VM crashed")
    with pytest.raises(ApiError) as e:
        nested.pilot_work(pilot["uid"])
    assert e.value.code == "token_revoked"
    back = alice.list_works(mine[1:])
    assert [(w["status"], w["retries"]) for w in back] == [("PENDING", 1), ("PENDING", 1)]
    assert bob.get_work(bob_job["uid"])["status"] == "PENDING"


def test_delegated_credential_expires_at_the_wall_clock_end(shared_server: ServerProcess,
                                                           world: dict) -> None:
    """The token's own expiry is the job's wall-clock end (the server ends the job then
    too), not hours later; read from the token's signed payload."""
    alice = login(shared_server, "alice")
    job = alice.submit(template="deleg-tpl", command="true", access_rights="700",
                       wall_clock_s=600)
    worker, host = vm_capable_worker(shared_server, alice, "deleg-h3")
    before = time.time()
    desc = worker.request_work(host)["work"]
    assert desc["uid"] == job["uid"]
    payload = desc["delegated_token"].split(".")[1]
    exp = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"]
    assert before + 600 <= exp <= time.time() + 600 + 30 + 1, exp - before
    assert worker.report(job["uid"], "ERROR", None, "test over")["status"] == "ERROR"


def test_a_job_without_a_limit_gets_the_servers_one_wall_clock(tmp_path: Path) -> None:
    """The server's configured default is the one value: sent to the worker as the job's
    limit, and the delegated token ends with it (plus the grace), as the reaper ends the
    job."""
    server = ServerProcess(tmp_path / "srv", env={"XWVM_DEFAULT_WALL_CLOCK_S": "900",
                                                  "XWVM_WALL_CLOCK_GRACE_S": "7"})
    server.init().start()
    try:
        admin = server.client()
        push(admin, "wall-tpl", "1.0", {"disk": random_file(tmp_path / "d.qcow2", MiB)})
        job = admin.submit(template="wall-tpl", command="true")
        worker, host = vm_capable_worker(server, admin, "wall-h1")
        before = time.time()
        desc = worker.request_work(host)["work"]
        assert desc["uid"] == job["uid"] and desc["wall_clock_s"] == 900
        payload = desc["delegated_token"].split(".")[1]
        exp = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"]
        assert before + 907 - 1 <= exp <= time.time() + 907 + 1, exp - before
    finally:
        server.stop()
