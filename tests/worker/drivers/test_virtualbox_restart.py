"""The VirtualBox driver across a VBoxSVC restart, against the FAKE vboxapi.

The fake's ``FakeService.restart`` plays VBoxSVC dying and coming back: every object a
client got before is a dead proxy (NS_ERROR_CALL_FAILED, which vboxapi's
``xcptIsDeadInterface`` recognises), VM processes exit with it (their machines read
Aborted), registered machines stay. ``restart_on[API name]`` makes the restart happen just
as the driver next uses that API, so it lands in the middle of state(), stop() or
destroy(). VirtualBox itself cannot run here: this proves the driver's handling as far as
the fake is faithful.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import fake_vboxapi
from tests.support.fake_vboxapi import FakeService, vdi
from tests.support.fake_vboxapi.guest import fake_guest_sector
from xwvm.worker.drivers import HypervisorUnavailable, VMSpec, VMState
from xwvm.worker.drivers.virtualbox import VirtualBoxDriver

W = "w1"
JOB = "r-1"


@pytest.fixture
def svc() -> Iterator[FakeService]:
    s = fake_vboxapi.start_service()
    yield s
    fake_vboxapi.stop_service()


@pytest.fixture
def drv(svc: FakeService, tmp_path: Path) -> Iterator[VirtualBoxDriver]:
    work = tmp_path / "work"
    work.mkdir()
    d = VirtualBoxDriver(W, work, api=fake_vboxapi, reconnect_s=10)
    d.host.lock_first_wait_s = 0.01
    yield d
    svc.down_until = 0.0
    d.cleanup_leftovers()


@pytest.fixture
def running(drv: VirtualBoxDriver, tmp_path: Path) -> VirtualBoxDriver:
    """A running VM of the driver's own (its guest would run for 10 minutes)."""
    template = tmp_path / "template.vdi"
    vdi.write(template, 64 << 20, sector0=fake_guest_sector("sleep 600\n"))
    drv.define(VMSpec(JOB, W, template, base_format="vdi"))
    drv.start(JOB)
    assert drv.state(JOB) == VMState.RUNNING
    return drv


@pytest.fixture
def vm_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="xwvm.worker.vm")
    return caplog


def _lines(log: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in log.records if r.name == "xwvm.worker.vm"]


def test_fake_state_across_a_vboxsvc_restart(running: VirtualBoxDriver, svc: FakeService,
                                             vm_log: pytest.LogCaptureFixture) -> None:
    """VBoxSVC restarts (down 0.5 s) as state() reads the machine's state: the driver
    reconnects, finds the machine again, and reads what the restart did to the VM."""
    svc.restart_on["state"] = 0.5
    started = time.monotonic()
    assert running.state(JOB) == VMState.CRASHED  # its VM process exited with VBoxSVC
    assert time.monotonic() - started >= 0.5 and svc.calls.count("restart 0.5") == 1
    assert svc.find(f"xwvm_{W}_{JOB}").process is None  # type: ignore[union-attr]
    lines = _lines(vm_log)
    assert any(level == logging.WARNING and text.startswith(
        "lost the connection to VirtualBox (VBoxSVC) during 'state of xwvm_w1_r-1'")
        for level, text in lines)
    assert any(level == logging.INFO and text.startswith(
        "reconnected to VirtualBox (VBoxSVC) after") for level, text in lines)


@pytest.mark.parametrize("at", ["powerDown", "lockMachine", "powerButton"])
def test_fake_stop_across_a_vboxsvc_restart(running: VirtualBoxDriver, svc: FakeService,
                                            at: str) -> None:
    svc.restart_on[at] = 0.2
    assert running.stop(JOB, grace_s=0.5) == VMState.CRASHED
    assert f"restart {0.2:g}" in svc.calls and at not in svc.restart_on
    running.destroy(JOB)
    assert svc.machines == []


@pytest.mark.parametrize("at", ["findMachine", "getExtraData", "mediumAttachments",
                                "powerDown", "unregister", "deleteConfig", "hardDisks"])
def test_fake_destroy_across_a_vboxsvc_restart_leaves_nothing(
        running: VirtualBoxDriver, svc: FakeService, at: str) -> None:
    """Wherever the restart lands in destroy(), it finishes: no machine, no medium, no
    folder is left; and destroy() stays idempotent."""
    vm_dir = running._vm_dir(JOB)
    assert vm_dir.is_dir()
    svc.restart_on[at] = 0.2
    running.destroy(JOB)
    assert "restart 0.2" in svc.calls and at not in svc.restart_on
    assert svc.machines == [] and svc.media == {} and not vm_dir.exists()
    assert running.list_own() == [] and running.state(JOB) == VMState.MISSING
    running.destroy(JOB)


def test_fake_a_vboxsvc_that_stays_down_ends_the_call_after_the_window(
        running: VirtualBoxDriver, svc: FakeService) -> None:
    running.host.reconnect_s = 0.5
    svc.restart_on["state"] = 3600
    started = time.monotonic()
    with pytest.raises(HypervisorUnavailable, match="gave up reconnecting after 0.5"):
        running.state(JOB)
    assert 0.5 <= time.monotonic() - started < 3
    svc.down_until = 0.0  # VBoxSVC is back: the next call reconnects
    assert running.state(JOB) == VMState.CRASHED


def test_fake_a_stale_guest_finds_its_machine_again_and_no_other(
        running: VirtualBoxDriver, svc: FakeService, tmp_path: Path) -> None:
    guest = running._require(JOB)
    svc.restart()
    assert guest.state() == VMState.CRASHED
    owner = guest.owner()
    assert owner is not None and owner.job_uid == JOB
    # Another machine takes the name (another UUID): to the stale guest, its VM is gone.
    guest.undefine()
    mgr = fake_vboxapi.VirtualBoxManager(None, None)
    vbox = mgr.getVirtualBox()
    other = vbox.createMachine(str(tmp_path / "other.vbox"), guest.name,
                               mgr.constants.PlatformArchitecture_x86, [], "Linux_64",
                               "", "", "", "")
    vbox.registerMachine(other)
    svc.restart()
    assert guest.state() == VMState.MISSING
    guest.power_off()
    guest.undefine()
    assert [m.name for m in svc.machines] == [guest.name] and svc.machines[0].id != guest.id
    svc.machines.clear()  # not the driver's: the test removes it
