"""A hostile guest against the outer worker's VM job runner (real VMJobRunner, real exchange
disk): what the guest writes, or what the job's owner put in its context, ends in an ERROR
outcome for that job, never in an exception that ends the worker."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import fake_vboxapi
from tests.support.fake_vboxapi import FakeService, vdi
from xwvm.protocol import exchange
from xwvm.protocol.messages import JobDescription
from xwvm.protocol.vocab import Fault
from xwvm.worker.drivers.virtualbox import VirtualBoxDriver
from xwvm.worker.vmjob import VMJobRunner, VMOptions

TPL_UID = "00000000-0000-0000-0000-0000000000aa"
JOB_UID = "00000000-0000-0000-0000-0000000000c1"


def _vm_job(network: str = "none", context: dict[str, Any] | None = None,
            owner: str = "alice", **job: Any) -> JobDescription:
    tpl = {"uid": TPL_UID, "name": "t", "version": "1", "os": "linux", "arch": "x86_64",
           "manifest": "", "min_memory_mb": 0, "min_cpus": 0,
           "artifacts": [{"role": "disk", "format": "qcow2", "virtual_size": 1 << 26,
                          "size": 1, "sha256": "0" * 64, "path": "disk.qcow2"},
                         {"role": "disk", "format": "vdi", "virtual_size": 1 << 26,
                          "size": 1, "sha256": "0" * 64, "path": "disk.vdi"}]}
    return JobDescription.from_json({"uid": JOB_UID, "template": tpl, "files": [],
                                     "network": network, "owner": owner, "command": "true",
                                     "delegated_token": "t", "context": context, **job})


class LocalImages:
    """An image source holding one template disk already (no server)."""

    def __init__(self, disk: Path) -> None:
        self.disk = disk

    def holdings(self) -> list[str]:
        return [TPL_UID]

    @contextlib.contextmanager
    def use(self, *a: Any, **kw: Any) -> Iterator[dict[str, Path]]:
        yield {"disk": self.disk}


@pytest.fixture(autouse=True)
def fake_vbox() -> Iterator[FakeService]:
    """The FAKE VirtualBox (tests/support/fake_vboxapi): no VM ever boots here."""
    svc = fake_vboxapi.start_service()
    yield svc
    fake_vboxapi.stop_service()


def _runner(work: Path) -> VMJobRunner:
    base = work / "base.vdi"
    base.parent.mkdir(parents=True, exist_ok=True)
    vdi.write(base, 1 << 26)
    return VMJobRunner(VirtualBoxDriver("w1", work, api=fake_vboxapi), LocalImages(base),
                       client=None,  # type: ignore[arg-type]  (never reached)
                       opts=VMOptions("w1", work, "https://127.0.0.1:9", "CA PEM"),
                       verify=lambda _t: None)


def _disk_with_verdict(work: Path, **verdict: Any) -> Path:
    disk = work / f"{JOB_UID}-exchange.img"
    exchange.create(disk, JOB_UID, [], results_capacity=1 << 20)
    exchange.write_results(disk, JOB_UID, **{"archive": None, "exit_code": 0,
                                             "message": "", **verdict})
    return disk


def test_uploaded_is_not_believed_from_a_vm_without_network(tmp_path: Path) -> None:
    """network=none: no NIC, no credential; a guest claiming it uploaded lies."""
    runner = _runner(tmp_path)
    disk = _disk_with_verdict(tmp_path, uploaded=True)
    out = runner._verdict(_vm_job("none"), disk, "console tail")
    assert out.status == "ERROR", out
    assert "network=none" in out.message and "console tail" in out.message


def test_uploaded_is_believed_from_a_vm_with_network(tmp_path: Path) -> None:
    """The server checks it: a COMPLETED report without results is refused (409), and the
    pull loop then reports ERROR (tests/worker/test_server_faults.py)."""
    runner = _runner(tmp_path)
    disk = _disk_with_verdict(tmp_path, uploaded=True, exit_code=3)
    out = runner._verdict(_vm_job("server"), disk, "")
    assert (out.status, out.exit_code) == ("COMPLETED", 3), out


def test_a_vm_that_died_before_its_verdict_is_given_back(tmp_path: Path) -> None:
    """No verdict at all: the guest's agent never got to write one (QEMU or the guest's
    kernel died under it). That is no payload's doing: given back, fault vm_crashed."""
    runner = _runner(tmp_path)
    disk = tmp_path / f"{JOB_UID}-exchange.img"
    exchange.create(disk, JOB_UID, [], results_capacity=1 << 20)
    out = runner._verdict(_vm_job("none"), disk, "kernel panic")
    assert (out.status, out.fault) == ("PENDING", Fault.VM_CRASHED), out
    assert "without writing results" in out.message and "kernel panic" in out.message


def test_results_lost_to_an_outage_are_given_back(tmp_path: Path) -> None:
    runner = _runner(tmp_path)
    disk = _disk_with_verdict(tmp_path, message="the results were not delivered: no answer",
                              fault=Fault.SERVER)
    out = runner._verdict(_vm_job("server"), disk, "")
    assert (out.status, out.fault) == ("PENDING", Fault.SERVER), out
    assert "not delivered" in out.message


@pytest.mark.parametrize("raw", [b"[" * 4000, b'{"job":"%s","length":1e400,"sha256":"x",'
                                              b'"exit_code":0}' % JOB_UID.encode()])
def test_a_tampered_verdict_is_the_jobs_error(tmp_path: Path, raw: bytes) -> None:
    runner = _runner(tmp_path)
    disk = tmp_path / f"{JOB_UID}-exchange.img"
    layout = exchange.create(disk, JOB_UID, [], results_capacity=1 << 20)
    with disk.open("r+b") as f:
        f.seek(layout.results_offset)
        f.write(exchange.RESULTS_MAGIC + raw + b"\0")
    out = runner._verdict(_vm_job("none"), disk, "")
    assert out.status == "ERROR", out
    assert "malformed" in out.message or "not JSON" in out.message, out


@pytest.mark.parametrize("context, owner, job", [
    ({"bogus": 1}, "alice", {}), ({"env": {"1BAD": 3}}, "alice", {}),
    ({}, "alice", {"delegated_token": ""}),  # the job's side: ValueError, not ContextError
    ({}, "", {}), ({}, "alice", {"command": ""}),
], ids=["unknown-key", "bad-env", "no-credential", "no-owner", "no-command"])
def test_a_context_the_contextualizer_refuses_is_the_jobs_error(
        tmp_path: Path, context: dict[str, Any], owner: str, job: dict[str, Any]) -> None:
    runner = _runner(tmp_path / "w")
    out = runner.run(_vm_job("none", context, owner, **job), threading.Event(),
                     threading.Event())
    assert out.status == "ERROR", out
    assert out.message.startswith("the job's context was refused: "), out
    assert not list((tmp_path / "w" / "vm").glob("*.img")), "the exchange disk is removed"


def test_a_template_signed_by_a_key_this_worker_does_not_trust_is_given_back(
        tmp_path: Path) -> None:
    """Another worker may trust its signer: the job is given back (fault refused, which
    the server does not count against this host), never failed; an altered or unsigned
    template is the template's error."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from xwvm import signing
    from xwvm.worker import images
    job = _vm_job("none")
    assert job.vm is not None
    tpl = job.vm.template.to_json()
    tpl["manifest"] = signing.canonical_manifest(tpl)
    theirs, ours = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    sig = signing.sign(tpl["manifest"], theirs)
    tpl["signatures"] = [{"key_id": sig.key_id, "signature": sig.signature}]
    signed = _vm_job("none", template=tpl)
    runner = _runner(tmp_path)
    trusted = {signing.key_id(ours.public_key()): ours.public_key()}
    runner.verify = lambda t: images.verify(t, trusted)
    out = runner.run(signed, threading.Event(), threading.Event())
    assert (out.status, out.fault) == ("PENDING", Fault.REFUSED), out
    assert "does not trust" in out.message
    tpl["signatures"] = []
    out = runner.run(_vm_job("none", template=tpl), threading.Event(), threading.Event())
    assert (out.status, out.fault) == ("ERROR", None) and "unsigned" in out.message, out


def test_a_full_worker_disk_while_copying_the_results_out_is_given_back(
        tmp_path: Path) -> None:
    """network=none: the worker copies the archive off the exchange disk into its own
    folder; a full disk there is the host's (disk_full), never the job's error."""
    from tests.support.tmpfs import fill, tmpfs
    runner = _runner(tmp_path / "work")
    with tmpfs(tmp_path / "small", 4096) as small:
        archive = tmp_path / "results.tar.gz"
        archive.write_bytes(bytes(range(256)) * 4096)  # 1 MiB
        disk = small / f"{JOB_UID}-exchange.img"
        exchange.create(disk, JOB_UID, [], results_capacity=1 << 21)
        exchange.write_results(disk, JOB_UID, archive, 0, "done")
        fill(small, leave=64 * 1024)
        out = runner._verdict(_vm_job("none"), disk, "")
        assert (out.status, out.fault) == ("PENDING", Fault.DISK_FULL), out
        assert not (small / f"{JOB_UID}-results.tar.gz").exists(), "no half-copied archive"
