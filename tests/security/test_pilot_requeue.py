"""Hole 8 of issue 12: a pilot VM's delegated credential must end on a job the pilot no
longer holds. The attack: a pilot takes a shared-app job, gives it back (or its worker
does), the job is assigned to another host, and the pilot's credential then forges the
job's report and results and reads its private inputs. Real server over TLS; the
delegated credential is minted by a real assignment, as a VM-capable worker gets it."""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import ServerProcess
from tests.templates.conftest import MiB, push, random_file
from xwvm.client.sdk import ApiError, Client


def host_of(server: ServerProcess, owner: Client, name: str, **facts: Any) -> tuple[Client, str]:
    """A worker account the owner enrolled (confined to the owner's jobs) and its host."""
    cred = owner.enroll_worker()
    c = Client(server.url, server.ca)
    c.login(cred["login"], cred["password"])
    host = c.register_host({"name": name, "os": "linux", "arch": "x86_64", "cpus": 2,
                            "memory_mb": 4096, "disk_mb": 100000, **facts})
    return c, host["uid"]


@pytest.fixture(scope="module")
def world(shared_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> dict:
    admin = shared_server.client()
    tmp = tmp_path_factory.mktemp("pilotq")
    files = {"disk": random_file(tmp / "d.qcow2", MiB), "kernel": random_file(tmp / "k", 4096),
             "initrd": random_file(tmp / "i", 4096)}
    push(admin, "pq-tpl", "1.0", files)
    admin.create_app("root", kind="shared")
    admin.create_user("carol", "carol-password", "standard")
    return {"tmp": tmp}


def carol(server: ServerProcess) -> Client:
    c = Client(server.url, server.ca)
    c.login("carol", "carol-password")
    return c


def pilot_of(server: ServerProcess, owner: Client, tag: str) -> tuple[Client, Client, str]:
    """A pilot VM job of the owner, assigned to a VM host: (its worker, the pilot's
    delegated credential, the pilot's uid)."""
    vm_worker, vm_host = host_of(server, owner, f"pq-vm-{tag}", hypervisors={
        "libvirt": {"usable": True, "accel": "tcg", "reason": "test"}})
    pilot = owner.submit(template="pq-tpl", pilot=True, pilot_idle_s=600)
    desc = vm_worker.request_work(vm_host)["work"]
    assert desc["uid"] == pilot["uid"]
    nested = Client(server.url, server.ca, token=desc["delegated_token"])
    return vm_worker, nested, pilot["uid"]


def forged_calls(nested: Client, job_uid: str, input_uid: str, secret: Path, tmp: Path,
                 tag: str) -> list[Callable[[], object]]:
    """Everything the pilot's credential might try on a job it no longer holds."""
    forged = tmp / f"forged-{tag}.tar.gz"
    with tarfile.open(forged, "w:gz") as tar:
        tar.add(secret, arcname="stdout.txt")
    return [
        lambda: nested.get_work(job_uid),
        lambda: nested.upload_result(job_uid, forged),
        lambda: nested.report(job_uid, "ERROR", 1, "forged"),
        lambda: nested.report(job_uid, "PENDING"),
        lambda: nested.progress(job_uid, "running"),
        lambda: nested.download_data(input_uid, tmp / f"stolen-{tag}.C"),
    ]


def assert_forbidden(attacks: list[Callable[[], object]]) -> None:
    for attack in attacks:
        with pytest.raises(ApiError) as e:
            attack()
        assert e.value.status == 403, (e.value.status, e.value.code, e.value.message)


@pytest.mark.parametrize("giver", ["pilot", "outer worker"])
def test_pilot_credential_ends_when_its_job_moves_to_another_host(
        shared_server: ServerProcess, world: dict, giver: str) -> None:
    owner = carol(shared_server)
    tag = giver.replace(" ", "-")
    vm_worker, nested, pilot_uid = pilot_of(shared_server, owner, tag)

    secret = world["tmp"] / f"secret-{tag}.C"
    secret.write_text("carol's private macro")
    inp = owner.upload_data(secret, access_rights="700")
    job = owner.submit("root", command="root -b -q secret.C", access_rights="700",
                       inputs=[{"data": inp["uid"], "name": "secret.C"}])
    taken = nested.pilot_work(pilot_uid)
    assert taken is not None and taken.uid == job["uid"]
    # While the pilot holds it, its credential reads the job's input (the legitimate case).
    nested.download_data(inp["uid"], world["tmp"] / f"ok-{tag}.C")

    (nested if giver == "pilot" else vm_worker).report(job["uid"], "PENDING",
                                                       message="given back")
    back = owner.get_work(job["uid"])
    assert back["status"] == "PENDING"
    assert back["pilot_uid"] is None and back["host"] is None, back
    # a give-back from inside the pilot's VM counts the retry, never the host's breaker
    [pilots_host] = [h for h in shared_server.client().list_hosts()
                     if h["uid"] == owner.get_work(pilot_uid)["host"]]
    assert back["retries"] == 1 and pilots_host["health"]["fault_streak"] == \
        (0 if giver == "pilot" else 1), pilots_host

    other_worker, other_host = host_of(shared_server, owner, f"pq-root-{tag}",
                                       shared_apps=["root"])
    assert other_worker.request_work(other_host)["work"]["uid"] == job["uid"]
    assert owner.get_work(job["uid"])["status"] == "RUNNING"

    assert_forbidden(forged_calls(nested, job["uid"], inp["uid"], secret, world["tmp"], tag))
    assert not (world["tmp"] / f"stolen-{tag}.C").exists()
    after = owner.get_work(job["uid"])
    assert after["status"] == "RUNNING" and after["result"] is None, after
    # The job's real worker still finishes it.
    assert other_worker.report(job["uid"], "ERROR", 2, "done")["status"] == "ERROR"
