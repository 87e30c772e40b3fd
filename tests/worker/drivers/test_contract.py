"""The driver contract, written once, run against every driver in DRIVERS.

libvirt boots real QEMU guests (software emulation here): the tiny test guest of
tests/support/guest.py runs a script and reports on its serial console. VirtualBox runs
against a FAKE of its API (tests/support/fake_vboxapi), whose guest runs the script's
echo/sleep lines; tests that need a real guest are LIBVIRT_ONLY.
"""

from __future__ import annotations

import hashlib
import io
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pycdlib
import pytest

from tests.support.guest import Guest
from tests.worker.drivers.conftest import DRIVERS, LIBVIRT_ONLY, new_driver
from xwvm.protocol import exchange
from xwvm.protocol.messages import HypervisorProbe
from xwvm.protocol.vocab import DISK_FORMATS, NetworkPolicy
from xwvm.worker.drivers import (
    Driver,
    SpecError,
    Unsupported,
    VMExists,
    VMNotFound,
    VMSpec,
    VMState,
)

BOOT_TIMEOUT_S = 90  # TCG on 2 shared cores; a guest usually powers off within ~10 s


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def wait_for(what: Callable[[], bool], timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what():
            return
        time.sleep(0.2)
    raise AssertionError(message)


def run_to_poweroff(driver: Driver, spec: VMSpec) -> str:
    """Define and start ``spec``, wait for the guest to power off, return its console."""
    driver.define(spec)
    driver.start(spec.job_uid)
    # STOPPING too: libvirt reports the guest's poweroff as "shutting down" for a moment.
    wait_for(lambda: driver.state(spec.job_uid) not in (VMState.RUNNING, VMState.STOPPING),
             BOOT_TIMEOUT_S,
             f"guest still running after {BOOT_TIMEOUT_S} s:\n"
             + driver.console_log(spec.job_uid))
    return driver.console_log(spec.job_uid)


def context_iso(path: Path, files: dict[str, bytes]) -> Path:
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, rock_ridge="1.09", vol_ident="cidata")
    for i, (name, data) in enumerate(files.items()):
        iso.add_fp(io.BytesIO(data), len(data), f"/F{i}.;1", rr_name=name)
    iso.write(str(path))
    iso.close()
    return path


# -- probe --------------------------------------------------------------------------------

def test_probe_finds_a_usable_accelerator_and_is_cached(driver: Driver) -> None:
    result = driver.probe()
    assert result.usable, result.reason
    assert result.accel in ("kvm", "tcg", "hw")  # hw: VirtualBox with VT-x/AMD-V
    assert result.version and result.reason
    if result.accel == "tcg":
        assert "KVM" in result.reason  # says why not KVM
    started = time.monotonic()
    assert driver.probe() is result
    assert time.monotonic() - started < 0.1
    assert driver.list_own() == []  # the probe guests left nothing behind
    assert list(driver.work_dir.iterdir()) == []


def test_probe_of_an_unreachable_hypervisor_says_why(driver_kind: str, worker_id: str,
                                                     work_dir: Path) -> None:
    if driver_kind == "libvirt":
        from xwvm.worker.drivers.libvirt import LibvirtDriver
        drv: Driver = LibvirtDriver(worker_id, work_dir,
                                    uri="qemu+unix:///system?socket=/nonexistent/sock")
    else:  # the fake, with no VirtualBox service running: as if VirtualBox were absent
        from tests.support import fake_vboxapi
        from xwvm.worker.drivers.virtualbox import VirtualBoxDriver
        fake_vboxapi.stop_service()
        drv = VirtualBoxDriver(worker_id, work_dir, api=fake_vboxapi)
    result = drv.probe()
    assert result == HypervisorProbe(usable=False, accel=None, reason=result.reason, version="")
    assert "unreachable" in result.reason


# -- disks --------------------------------------------------------------------------------

def test_overlay_leaves_the_template_alone(driver: Driver, spec_for: Callable[..., VMSpec],
                                          template: Path) -> None:
    before = sha256(template)
    overlay = driver.prepare_disk(spec_for("disk-1", disk_cap_mb=128))
    assert overlay.exists() and overlay.stat().st_size < 1 << 20
    assert sha256(template) == before
    driver.destroy("disk-1")
    assert not overlay.exists()
    assert sha256(template) == before


def test_disk_cap_below_the_template_is_refused(driver: Driver,
                                                spec_for: Callable[..., VMSpec]) -> None:
    with pytest.raises(SpecError, match="smaller than the template"):
        driver.prepare_disk(spec_for("disk-2", disk_cap_mb=16))
    assert list(driver.work_dir.iterdir()) == []


@LIBVIRT_ONLY  # timing a fake's overlay would prove nothing
@pytest.mark.parametrize("size", ["1G", "20G"])
def test_overlay_cost_does_not_grow_with_the_template(driver: Driver, vm_root: Path,
                                                      spec_for: Callable[..., VMSpec],
                                                      size: str) -> None:
    big = vm_root / "templates" / f"sparse-{size}.raw"
    with big.open("wb") as f:
        f.truncate({"1G": 1 << 30, "20G": 20 << 30}[size])
    big.chmod(0o644)
    started = time.monotonic()
    overlay = driver.prepare_disk(spec_for(f"big-{size}", base_image=big, base_format="raw"))
    assert time.monotonic() - started < 2.0
    assert overlay.stat().st_size < 1 << 20


# -- a real boot --------------------------------------------------------------------------

@LIBVIRT_ONLY
def test_guest_boots_runs_powers_off_and_is_destroyed(
        driver: Driver, spec_for: Callable[..., VMSpec], make_guest: Callable[[str], Guest],
        template: Path, vm_root: Path) -> None:
    guest = make_guest(
        "echo MARK-HELLO\n"
        "echo NICS: $(ls /sys/class/net)\n"
        "mount -t iso9660 -o ro /dev/sr0 /mnt && echo CTX: $(cat /mnt/hello.txt)\n"
        "dd if=/dev/zero of=/dev/vda bs=1M count=4 2>/dev/null && echo WROTE-DISK\n")
    iso = context_iso(vm_root / "ctx-boot.iso", {"hello.txt": b"from-the-context\n"})
    before = sha256(template)
    spec = spec_for("boot-1", guest, context_iso=iso, cpu_quota_percent=100)
    started = time.monotonic()
    console = run_to_poweroff(driver, spec)
    elapsed = time.monotonic() - started
    assert "MARK-HELLO" in console
    assert "NICS: lo\n" in console  # network=none: no NIC at all
    assert "CTX: from-the-context" in console
    assert "WROTE-DISK" in console
    assert "XWVM-GUEST: done" in console
    assert driver.state("boot-1") == VMState.SHUTOFF  # a clean poweroff, not a crash
    assert driver.list_own() == ["boot-1"]
    assert driver.stop("boot-1", grace_s=1) == VMState.SHUTOFF  # not running: no error
    assert sha256(template) == before
    vm_files = [p for p in driver.work_dir.iterdir() if "boot-1" in p.name]
    assert vm_files
    driver.destroy("boot-1")
    assert driver.state("boot-1") == VMState.MISSING
    assert not any(p.exists() for p in vm_files)
    driver.destroy("boot-1")  # idempotent
    assert driver.list_own() == []
    assert sha256(template) == before
    print(f"define+start+boot+poweroff: {elapsed:.1f} s")


@LIBVIRT_ONLY
def test_guest_reads_and_writes_the_exchange_disk_in_place(
        driver: Driver, spec_for: Callable[..., VMSpec], make_guest: Callable[[str], Guest],
        vm_root: Path) -> None:
    """network=none's transport: the caller's raw disk is the guest's second disk; what
    the guest writes is in the caller's file after poweroff, and destroy leaves it."""
    disk = vm_root / "exchange-ex-1.img"
    exchange.create(disk, "ex-1", [], results_capacity=1 << 20)
    guest = make_guest(
        "echo EXHEAD: $(head -c 13 /dev/vdb)\n"
        "echo FROM-GUEST | dd of=/dev/vdb bs=512 seek=4096 conv=notrunc 2>/dev/null"
        " && sync && echo WROTE\n")
    console = run_to_poweroff(driver, spec_for("ex-1", guest, exchange_disk=disk))
    assert "EXHEAD: XWVM-EXCHANGE" in console and "WROTE" in console, console
    driver.destroy("ex-1")
    with disk.open("rb") as f:
        f.seek(4096 * 512)
        assert f.read(10) == b"FROM-GUEST"
    assert exchange.read_layout(disk.open("rb"), "ex-1").job_uid == "ex-1"
    disk.unlink()


def test_every_driver_enforces_network_none(driver: Driver) -> None:
    assert NetworkPolicy.NONE in driver.networks()
    assert NetworkPolicy.INTERNET not in driver.networks()  # no egress proxy yet


def test_stop_powers_off_a_guest_that_ignores_acpi(
        driver: Driver, spec_for: Callable[..., VMSpec],
        make_guest: Callable[[str], Guest]) -> None:
    spec = spec_for("stop-1", make_guest("sleep 600\n"))
    driver.define(spec)
    assert driver.state("stop-1") == VMState.DEFINED
    driver.start("stop-1")
    assert driver.state("stop-1") == VMState.RUNNING
    started = time.monotonic()
    assert driver.stop("stop-1", grace_s=1.0) == VMState.SHUTOFF
    assert 1.0 <= time.monotonic() - started < 15
    driver.destroy("stop-1")
    assert driver.state("stop-1") == VMState.MISSING


def test_a_dead_hypervisor_process_reads_as_crashed(
        driver: Driver, driver_kind: str, spec_for: Callable[..., VMSpec],
        make_guest: Callable[[str], Guest]) -> None:
    spec = spec_for("crash-1", make_guest("sleep 600\n"))
    driver.define(spec)
    driver.start("crash-1")
    if driver_kind == "libvirt":
        pid = int(Path(f"/run/libvirt/qemu/xwvm_{driver.worker_id}_crash-1.pid").read_text())
    else:  # the fake's VM process is a real process too
        from tests.support import fake_vboxapi
        pid = fake_vboxapi.service().vm_pid(f"xwvm_{driver.worker_id}_crash-1")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: driver.state("crash-1") != VMState.RUNNING, 10, "QEMU kill not noticed")
    assert driver.state("crash-1") == VMState.CRASHED
    driver.destroy("crash-1")


# -- errors and idempotence ---------------------------------------------------------------

def test_missing_vms(driver: Driver) -> None:
    assert driver.state("nope") == VMState.MISSING
    assert driver.stop("nope", grace_s=0) == VMState.MISSING
    driver.destroy("nope")
    with pytest.raises(VMNotFound):
        driver.start("nope")
    with pytest.raises(VMNotFound):
        driver.console_log("nope")


def test_define_twice_is_refused(driver: Driver, spec_for: Callable[..., VMSpec],
                                 make_guest: Callable[[str], Guest]) -> None:
    spec = spec_for("twice-1", make_guest("true\n"))
    driver.define(spec)
    with pytest.raises(VMExists):
        driver.define(spec)
    assert driver.list_own() == ["twice-1"]
    assert driver.console_log("twice-1") == ""


def test_refused_spec_leaves_nothing(driver: Driver, spec_for: Callable[..., VMSpec]) -> None:
    spec = spec_for("inet-1", network=NetworkPolicy.INTERNET, server_endpoint=("127.0.0.1", 1))
    with pytest.raises(Unsupported, match="not supported yet"):
        driver.define(spec)
    assert driver.list_own() == []
    assert list(driver.work_dir.iterdir()) == []


@pytest.mark.parametrize("kind", DRIVERS)
def test_a_template_format_the_backend_cannot_boot_is_refused(kind: str, tmp_path: Path) -> None:
    """Checked once, in the base, before the hypervisor is asked anything or a file made:
    every backend refuses a format outside its disk_formats with the same error."""
    drv = new_driver(kind, "w1", tmp_path / "work")
    for fmt in DISK_FORMATS:
        if fmt in drv.disk_formats:
            continue
        spec = VMSpec("fmt-1", "w1", tmp_path / f"t.{fmt}", base_format=fmt)
        for call in (drv.define, drv.prepare_disk):
            with pytest.raises(Unsupported) as e:
                call(spec)
            assert e.value.message == (f"the {drv.label} driver boots "
                                       f"{' or '.join(drv.disk_formats)} templates, not {fmt}")
    assert not (tmp_path / "work").exists()


def test_spec_of_another_worker_is_refused(driver: Driver,
                                           spec_for: Callable[..., VMSpec]) -> None:
    from dataclasses import replace
    with pytest.raises(SpecError):
        driver.define(replace(spec_for("other-1"), worker_id="someone-else"))


# -- crash-safe cleanup -------------------------------------------------------------------

def test_restarted_worker_removes_what_a_crashed_run_left(
        driver_kind: str, worker_id: str, work_dir: Path, template: Path,
        make_guest: Callable[[str], Guest]) -> None:
    guest = make_guest("sleep 600\n")
    first = new_driver(driver_kind, worker_id, work_dir)
    boot = {"kernel": guest.kernel, "initrd": guest.initrd, "cmdline": guest.cmdline,
            "base_format": first.disk_formats[0]}
    first.define(VMSpec("left-1", worker_id, template, memory_mb=128, **boot))
    first.start("left-1")
    first.define(VMSpec("left-2", worker_id, template, memory_mb=128, **boot))
    first.prepare_disk(VMSpec("left-3", worker_id, template,
                              base_format=first.disk_formats[0]))  # died before define
    neighbour = new_driver(driver_kind, worker_id + "x", work_dir)
    neighbour.define(VMSpec("keep-1", worker_id + "x", template, memory_mb=128, **boot))
    del first  # the worker process dies; its VMs and files stay

    second = new_driver(driver_kind, worker_id, work_dir)
    assert second.list_own() == ["left-1", "left-2"]
    assert second.cleanup_leftovers() == ["left-1", "left-2", "left-3"]
    assert second.list_own() == []
    for job in ("left-1", "left-2", "left-3"):
        assert second.state(job) == VMState.MISSING
    assert [p.name for p in work_dir.iterdir()] == [f"xwvm_{worker_id}x_keep-1"]
    assert neighbour.list_own() == ["keep-1"]  # another worker's VM is not ours to remove
    assert second.cleanup_leftovers() == []
    neighbour.cleanup_leftovers()
    assert list(work_dir.iterdir()) == []
