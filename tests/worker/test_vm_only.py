"""A worker started for VM jobs never runs anything on the bare host (issue 13, hole 12).

Against a real server over TLS: ``xwvm worker run --hypervisor virtualbox`` on a host
without VirtualBox stops at once with the reason and takes no native job; a worker that
runs VM jobs only says so in its host record, and the scheduler never gives it a native
job; a hostile server that sends one anyway gets a refusal, and nothing runs.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import ServerProcess, enrolled_credential, run_cli
from xwvm.client.sdk import Client
from xwvm.protocol.messages import JobDescription
from xwvm.worker import facts
from xwvm.worker.credential import Credential
from xwvm.worker.pull import Worker, WorkerOptions


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    s = ServerProcess(tmp_path_factory.mktemp("vmonly")).init().start()
    yield s
    s.stop()


def native_job(server: ServerProcess, tmp: Path, marker: Path) -> dict:
    admin = server.client()
    script = tmp / "touch.sh"
    script.write_text(f"#!/bin/sh\ntouch {marker}\n")
    data = admin.upload_data(script)
    app = admin.create_app(f"touch{abs(hash(tmp)) % 10**8}", {"linux/x86_64": data["uid"]})
    return admin.submit(app=app["name"])


def credential(server: ServerProcess, path: Path) -> Credential:
    return enrolled_credential(server, path)


def host_facts(name: str, native: bool) -> dict:
    out = facts.collect(Path("/"), name, []).to_json()
    out["hypervisors"] = {"libvirt": {"usable": True, "accel": "kvm", "reason": "probe ran",
                                      "networks": ["none", "server"]},
                          "native": {"usable": native, "reason": "test"}}
    return out


def test_unusable_hypervisor_stops_the_worker_and_no_native_job_is_taken(
        server: ServerProcess, tmp_path: Path) -> None:
    if shutil.which("VBoxManage"):
        pytest.skip("VirtualBox is installed here")
    marker = tmp_path / "ran-on-the-host"
    job = native_job(server, tmp_path, marker)
    cred = tmp_path / "w.cred"
    credential(server, cred)
    proc = run_cli(["worker", "run", "--credential", str(cred), "--work-dir",
                    str(tmp_path / "wd"), "--name", "vboxless", "--hypervisor", "virtualbox",
                    "--max-idle", "5"], tmp_path / "cfg", check=False, timeout=120)
    assert proc.returncode != 0
    assert "virtualbox" in proc.stderr.lower() and "unusable" in proc.stderr.lower(), \
        proc.stderr
    assert server.client().get_work(job["uid"])["status"] == "PENDING"
    assert not marker.exists()
    assert "vboxless" not in [h["name"] for h in server.client().list_hosts()]
    server.client().work_action(job["uid"], "abort")  # the next tests' hosts must not see it


def test_allow_native_does_not_excuse_a_broken_hypervisor(
        server: ServerProcess, tmp_path: Path) -> None:
    if shutil.which("VBoxManage"):
        pytest.skip("VirtualBox is installed here")
    cred = tmp_path / "w.cred"
    credential(server, cred)
    proc = run_cli(["worker", "run", "--credential", str(cred), "--work-dir",
                    str(tmp_path / "wd"), "--name", "vboxless2", "--hypervisor", "virtualbox",
                    "--allow-native", "--max-idle", "2"], tmp_path / "cfg", check=False,
                   timeout=120)
    assert proc.returncode != 0 and "virtualbox" in proc.stderr.lower(), proc.stderr


def test_the_scheduler_never_gives_a_native_job_to_a_vm_only_host(
        server: ServerProcess, tmp_path: Path) -> None:
    job = native_job(server, tmp_path, tmp_path / "never")
    worker = Client(server.url, str(server.ca))
    credential(server, tmp_path / "w.cred").login_with(worker)
    host = worker.register_host(host_facts("vmonly", native=False))["uid"]
    for _ in range(3):
        assert worker.request_work(host).get("work") is None
    assert server.client().get_work(job["uid"])["status"] == "PENDING"
    listed = {h["name"]: h for h in server.client().list_hosts()}
    assert listed["vmonly"]["hypervisors"]["native"]["usable"] is False
    # The same worker, now allowing native jobs, gets it.
    worker.register_host({**host_facts("vmonly", native=True), "uid": host})
    assert worker.request_work(host)["work"]["uid"] == job["uid"]
    server.client().work_action(job["uid"], "abort")


def test_a_vm_only_worker_refuses_a_native_job_a_hostile_server_sends(
        server: ServerProcess, tmp_path: Path) -> None:
    """The server (hostile, or an older one that ignores the host record) assigns a native
    job: the worker runs nothing and says why."""
    marker = tmp_path / "ran-on-the-host"
    job = native_job(server, tmp_path, marker)
    cred = credential(server, tmp_path / "w.cred")
    opts = WorkerOptions(work_dir=tmp_path / "wd", name="vmonly2", hypervisor="libvirt")
    w = Worker(cred, opts)
    w._login()
    facts_now = host_facts("vmonly2", native=True)  # as an old server would see any host
    w.host = w.client.register_host(facts_now)["uid"]
    assigned = w.client.request_work(w.host)["work"]
    assert assigned["uid"] == job["uid"]
    w.run_job(JobDescription.from_json(assigned))
    assert not marker.exists()
    after = server.client().get_work(job["uid"])
    assert after["status"] == "ERROR" and "VM jobs only" in (after.get("error") or "")
