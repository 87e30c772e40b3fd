"""The VM lifecycle above the drivers (xwvm/worker/vmjob.py), with real tiny guests:
poweroff ends the job, the wall-clock limit and a silent (hung) guest stop the VM."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.guest import Guest
from xwvm.client.sdk import Client
from xwvm.protocol.messages import JobDescription
from xwvm.protocol.vocab import Fault
from xwvm.worker.drivers import Driver, VMSpec, VMState
from xwvm.worker.vmjob import VMJobRunner, VMOptions

# The server is not needed for these checks: an unreachable one means "no nested beats".
NO_SERVER = Client("https://127.0.0.1:9", timeout=1)


def runner(driver: Driver, work_dir: Path, hang_timeout_s: float) -> VMJobRunner:
    opts = VMOptions(worker_id=driver.worker_id, work_dir=work_dir,
                     server_url="https://127.0.0.1:9", ca_pem="", hang_timeout_s=hang_timeout_s,
                     poll_s=0.2)
    return VMJobRunner(driver, images=None, client=NO_SERVER, opts=opts,  # type: ignore[arg-type]
                       verify=lambda _t: None)


@pytest.mark.parametrize("driver_kind", ["libvirt"])
@pytest.mark.parametrize("script,job,expected", [
    ("echo up\n", {}, "off"),
    ("echo up\nwhile true; do echo tick; sleep 1; done\n", {"wall_clock_s": 12}, "wall_clock"),
    ("echo up\nsleep 600\n", {}, "hung"),
])
def test_monitor(driver: Driver, spec_for: Callable[..., VMSpec],
                 make_guest: Callable[[str], Guest], work_dir: Path, script: str, job: dict,
                 expected: str) -> None:
    uid = f"mon-{expected.replace('_', '-')}"
    driver.define(spec_for(uid, make_guest(script)))
    driver.start(uid)
    try:
        state = runner(driver, work_dir, hang_timeout_s=15)._monitor(
            JobDescription.from_json({"uid": uid, **job}), threading.Event())
        assert state == expected
        if expected != "off":
            assert driver.state(uid) in (VMState.SHUTOFF, VMState.MISSING), "the VM was stopped"
    finally:
        driver.destroy(uid)


def test_probe_refuses_a_work_dir_qemu_cannot_reach(vm_root: Path, kernel: object) -> None:
    from xwvm.worker.drivers.libvirt import LibvirtDriver
    private = vm_root / "private"
    private.mkdir(mode=0o700)
    private.chmod(0o700)
    result = LibvirtDriver("t-private", private / "work").probe()
    assert not result.usable
    assert f"{private} is not searchable by others" in result.reason


@pytest.mark.parametrize("driver_kind", ["libvirt"])
def test_a_vm_its_hypervisor_paused_is_stopped_and_its_job_given_back(
        driver: Driver, spec_for: Callable[..., VMSpec], make_guest: Callable[[str], Guest],
        work_dir: Path) -> None:
    """QEMU pauses a guest whose disk write met a full host disk (werror=enospc): nobody
    in the worker pauses VMs, so a paused one is stopped after PAUSED_S and its job given
    back (fault disk_full when the work dir's disk is short, else host), never left to the
    hang timeout as the job's error."""
    uid = "mon-paused"
    driver.define(spec_for(uid, make_guest("echo up\nwhile true; do echo tick; sleep 1; done\n")))
    driver.start(uid)
    pause = threading.Timer(3, lambda: driver.host.lookup(driver._name(uid)).suspend())  # type: ignore[attr-defined]
    pause.start()
    try:
        run = runner(driver, work_dir, hang_timeout_s=600)
        job = JobDescription.from_json({"uid": uid})
        state = run._monitor(job, threading.Event())
        assert state == "paused"
        assert driver.state(uid) in (VMState.SHUTOFF, VMState.MISSING), "the VM was stopped"
        out = run._stopped(job, state, "tick")
        assert (out.status, out.fault) == ("PENDING", Fault.HOST), out
        assert "the hypervisor paused the VM" in out.message
    finally:
        pause.cancel()
        driver.destroy(uid)


@pytest.mark.parametrize("driver_kind", ["libvirt"])
def test_a_vm_that_reads_defined_is_off_not_waited_on(
        driver: Driver, spec_for: Callable[..., VMSpec], make_guest: Callable[[str], Guest],
        work_dir: Path) -> None:
    """libvirt says "shut off (unknown)" (DEFINED) for a guest that powered off while
    libvirtd restarted (seen in the soak): the monitor reads it as off, and the verdict
    decides, instead of waiting for the hang timeout and failing the job."""
    uid = "mon-defined"
    driver.define(spec_for(uid, make_guest("echo up\n")))  # never started: reads DEFINED
    try:
        assert driver.state(uid) == VMState.DEFINED
        run = runner(driver, work_dir, hang_timeout_s=600)
        assert run._monitor(JobDescription.from_json({"uid": uid}), threading.Event()) == "off"
    finally:
        driver.destroy(uid)
