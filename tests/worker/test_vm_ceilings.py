"""A VM's size is the volunteer's to cap, not the job's to take (issue 13, hole 10).

A job's minimums used to become its VM's size: all the RAM, every CPU at 100 %, all the
free disk. Now the worker's owner sets ceilings (``--max-vm-memory``, ``--max-vm-cpus``,
``--max-vm-disk``, ``--vm-cpu-percent``, with defaults that leave the host usable), the
host record carries them, the scheduler sends no job that needs more, a worker handed one
anyway gives it back before fetching a byte, and every VM's caps are what the hypervisor
enforces (libvirt: <memory>, <vcpu>, <cputune>; VirtualBox: memorySize, CPUCount,
CPUExecutionCap, checked on the FAKE vboxapi: VirtualBox cannot run here).
"""

from __future__ import annotations

import os
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.server.conftest import World, db, sessions, world  # noqa: F401
from tests.support import fake_vboxapi
from tests.support.fake_vboxapi import FakeService, vdi
from xwvm.protocol.messages import JobDescription
from xwvm.server.db.models import Template, Work
from xwvm.server.rights import Level
from xwvm.server.scheduler.assign import assign
from xwvm.worker import facts
from xwvm.worker.drivers.libvirt import LibvirtDriver
from xwvm.worker.drivers.virtualbox import VirtualBoxDriver
from xwvm.worker.facts import VMCeilings
from xwvm.worker.vmjob import VMJobRunner, VMOptions

CEILINGS = VMCeilings(memory_mb=2048, cpus=2, disk_mb=10_000, cpu_percent=50)
TPL_UID = "00000000-0000-0000-0000-0000000000aa"
JOB_UID = "00000000-0000-0000-0000-0000000000b1"


def _disk(fmt: str, virtual_size: int) -> dict[str, Any]:
    return {"role": "disk", "format": fmt, "virtual_size": virtual_size, "size": 1,
            "sha256": "0" * 64, "path": f"disk.{fmt}"}


def _vm_job(**kw: Any) -> JobDescription:
    tpl = {"uid": TPL_UID, "name": "t", "version": "1", "os": "linux", "arch": "x86_64",
           "manifest": "", "min_memory_mb": 0, "min_cpus": 0,
           "artifacts": [_disk("qcow2", 64 << 20), _disk("vdi", 64 << 20)]}
    tpl.update(kw.pop("template", {}))
    return JobDescription.from_json({"uid": JOB_UID, "template": tpl, "files": [],
                                     "network": "none", "owner": "alice",
                                     "delegated_token": "t", **kw})


class NoImages:
    """Fails the test if the runner fetches the template."""

    def holdings(self) -> list[str]:
        return []

    def use(self, *a: Any, **kw: Any) -> Any:
        raise AssertionError("the template was fetched for a job this host must not run")


def _runner(driver: Any, work: Path, ceilings: VMCeilings | None = CEILINGS) -> VMJobRunner:
    opts = VMOptions("w1", work, "https://127.0.0.1:9", "", ceilings=ceilings)
    return VMJobRunner(driver, NoImages(), client=None,  # type: ignore[arg-type]
                       opts=opts, verify=lambda _t: None)


# -- the scheduler ------------------------------------------------------------------------

def test_scheduler_sends_no_vm_job_beyond_the_hosts_vm_ceilings(world: World) -> None:  # noqa: F811
    alice, w = world.user("alice"), world.user("w", Level.WORKER)
    big_tpl = Template(uid=TPL_UID, name="big", version="1", owner_uid=alice.uid,
                       access_rights=0o755, min_memory_mb=8192)
    small_tpl = Template(name="small", version="1", owner_uid=alice.uid, access_rights=0o755)
    world.db.add_all([big_tpl, small_tpl])
    world.db.flush()

    def job(tpl: Template, **kw: int) -> Work:
        row = Work(template_uid=tpl.uid, command="true", status="PENDING", network="none",
                   owner_uid=alice.uid, access_rights=0o755, **kw)
        world.db.add(row)
        world.db.flush()
        return row

    too_big = [job(small_tpl, min_memory_mb=4096), job(small_tpl, min_cpus=4),
               job(small_tpl, min_disk_mb=20_000), job(big_tpl)]
    fits = job(small_tpl, min_memory_mb=2048, min_cpus=2, min_disk_mb=10_000)
    host = world.host(w, memory_mb=65536, cpus=32)  # a big machine, lent in part
    host.hypervisors = {"libvirt": {"usable": True, "networks": ["none", "server"],
                                    "limits": CEILINGS.to_json()}}
    assert assign(world.db, host, w).uid == fits.uid
    assert assign(world.db, host, w) is None, "every other job needs more than the ceilings"
    assert all(j.status == "PENDING" for j in too_big)
    roomy = world.host(w, memory_mb=65536, cpus=32)
    roomy.hypervisors = {"libvirt": {"usable": True, "networks": ["none"], "limits": {
        "memory_mb": 16384, "cpus": 8, "disk_mb": 50_000}}}
    assert {assign(world.db, roomy, w).uid for _ in too_big} == {j.uid for j in too_big}


def test_scheduler_reads_malformed_ceilings_as_nothing_allowed(world: World) -> None:  # noqa: F811
    alice, w = world.user("alice"), world.user("w", Level.WORKER)
    tpl = Template(name="t", version="1", owner_uid=alice.uid, access_rights=0o755)
    world.db.add(tpl)
    world.db.flush()
    world.db.add(Work(template_uid=tpl.uid, command="true", status="PENDING", network="none",
                      owner_uid=alice.uid, access_rights=0o755, min_memory_mb=512))
    world.db.flush()
    host = world.host(w)
    host.hypervisors = {"libvirt": {"usable": True, "networks": ["none"],
                                    "limits": {"memory_mb": "lots", "cpus": True}}}
    assert assign(world.db, host, w) is None


# -- the worker's ceilings ------------------------------------------------------------------

def test_default_ceilings_leave_the_host_usable(tmp_path: Path) -> None:
    c = facts.vm_ceilings(tmp_path)
    assert c.memory_mb <= max(facts.memory_mb() // 2, facts.MIN_VM_MEMORY_MB)
    assert c.cpus == max((os.cpu_count() or 1) - 1, 1)
    assert 0 < c.disk_mb <= facts.DEFAULT_MAX_VM_DISK_MB
    owner = facts.vm_ceilings(tmp_path, memory=1 << 30, cpus=10_000, disk=1 << 40,
                              cpu_percent=500)
    assert owner.memory_mb <= facts.memory_mb() and owner.cpus <= (os.cpu_count() or 1)
    assert owner.cpu_percent == 100, "never more than the host has"


def test_worker_run_takes_the_ceilings_from_its_owner(tmp_path: Path) -> None:
    from xwvm.worker.credential import Credential
    from xwvm.worker.pull import Worker, WorkerOptions
    opts = WorkerOptions(work_dir=tmp_path / "w", name="n", max_vm_memory_mb=1024,
                         max_vm_cpus=1, max_vm_disk_mb=3000, vm_cpu_percent=25)
    worker = Worker(Credential("https://127.0.0.1:9", "l", "p"), opts)
    assert worker.vm_ceilings() == VMCeilings(1024, 1, 3000, 25)


# -- a job bigger than the ceilings: given back unfetched -----------------------------------

@pytest.mark.parametrize("job", [
    _vm_job(min_memory_mb=4096), _vm_job(min_cpus=3), _vm_job(min_disk_mb=10_001),
    _vm_job(template={"min_memory_mb": 3000}),
    _vm_job(template={"artifacts": [_disk("qcow2", 20_000 << 20)]}),
], ids=["memory", "cpus", "disk", "template-memory", "template-disk-size"])
def test_a_job_beyond_the_ceilings_is_given_back_before_any_fetch(
        tmp_path: Path, job: JobDescription) -> None:
    out = _runner(LibvirtDriver("w1", tmp_path), tmp_path).run(
        job, threading.Event(), threading.Event())
    assert out.status == "PENDING", out
    assert "ceilings" in out.message


# -- what the hypervisor enforces -----------------------------------------------------------

def test_libvirt_domain_caps_are_the_ceilings_at_most(tmp_path: Path) -> None:
    drv = LibvirtDriver("w1", tmp_path)
    runner = _runner(drv, tmp_path)
    paths = {"disk": tmp_path / "base.qcow2"}
    spec = runner._spec(_vm_job(min_memory_mb=2048, min_cpus=2), paths)
    dom = ET.fromstring(drv.domain_xml(spec))
    assert dom.findtext("memory") == "2048" and dom.find("memory").get("unit") == "MiB"
    assert dom.findtext("vcpu") == "2"
    period, quota = int(dom.findtext("cputune/period")), int(dom.findtext("cputune/quota"))
    assert quota * 100 == period * CEILINGS.cpu_percent, "each vCPU at the owner's share"
    small = ET.fromstring(drv.domain_xml(runner._spec(_vm_job(), paths)))
    assert (small.findtext("memory"), small.findtext("vcpu")) == ("256", "1")


@pytest.fixture
def fake_vbox() -> Iterator[FakeService]:
    svc = fake_vboxapi.start_service()
    yield svc
    fake_vboxapi.stop_service()


def test_fake_virtualbox_settings_carry_the_caps(tmp_path: Path, fake_vbox: FakeService) -> None:
    work = tmp_path / "work"
    work.mkdir()
    drv = VirtualBoxDriver("w1", work, api=fake_vboxapi)
    try:
        tpl = tmp_path / "base.vdi"
        vdi.write(tpl, 64 << 20)
        spec = replace(_runner(drv, work)._spec(_vm_job(min_memory_mb=1536, min_cpus=2),
                                                {"disk": tpl}), context_iso=None)
        drv.define(spec)
        machine = fake_vbox.find(f"xwvm_w1_{spec.job_uid}")
        assert machine is not None
        values = machine.config.values
        assert (values["memorySize"], values["CPUCount"], values["CPUExecutionCap"]) == \
            (1536, 2, CEILINGS.cpu_percent)
    finally:
        drv.cleanup_leftovers()
