"""The VirtualBox driver against the FAKE vboxapi: the hardening profile on the fake
machine's final configuration, the immutable shared template, session-lock retries,
error translation, network decisions, cleanup, and vmjob's lifecycle over the driver.

VirtualBox itself cannot run here; what these tests prove is that the driver drives the
API as VirtualBox documents it (as far as the fake is faithful), not that a real
VirtualBox boots the VM.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import fake_vboxapi
from tests.support.fake_vboxapi import FakeService, FakeXPCOMError, vdi
from tests.support.fake_vboxapi.constants import FakeConstants
from tests.support.fake_vboxapi.guest import fake_guest_sector
from xwvm.protocol import exchange
from xwvm.protocol.messages import JobDescription
from xwvm.protocol.vocab import NetworkPolicy
from xwvm.worker.drivers import (
    DriverError,
    HypervisorUnavailable,
    SpecError,
    Unsupported,
    VMNotFound,
    VMSpec,
    VMState,
)
from xwvm.worker.drivers.errors import ConnectionLost
from xwvm.worker.drivers.virtualbox import VirtualBoxDriver, network, policy
from xwvm.worker.drivers.virtualbox.host import Host

C = FakeConstants()
W = "w1"


@pytest.fixture
def svc() -> Iterator[FakeService]:
    s = fake_vboxapi.start_service()
    yield s
    fake_vboxapi.stop_service()


@pytest.fixture
def work_dir(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
def drv(svc: FakeService, work_dir: Path) -> Iterator[VirtualBoxDriver]:
    d = VirtualBoxDriver(W, work_dir, api=fake_vboxapi)
    d.host.lock_first_wait_s = 0.01
    yield d
    d.cleanup_leftovers()


def _template(tmp_path: Path, script: str | None = None, size: int = 64 << 20) -> Path:
    path = tmp_path / f"tpl-{time.monotonic_ns()}.vdi"
    vdi.write(path, size, sector0=fake_guest_sector(script) if script is not None else None)
    return path


def _spec(job: str, template: Path, **kw: Any) -> VMSpec:
    """This worker's spec for ``job`` over a VDI template (VirtualBox's format)."""
    return VMSpec(job, W, template, base_format="vdi", **kw)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _wait(what: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError("timed out")


# -- the hardening profile ----------------------------------------------------------------

def test_fake_machine_final_configuration_has_every_hardening_setting(
        drv: VirtualBoxDriver, svc: FakeService, tmp_path: Path) -> None:
    iso = tmp_path / "ctx.iso"
    iso.write_bytes(b"\0" * 4096)
    tpl = _template(tmp_path)
    drv.define(_spec("h-1", tpl, vcpus=2, memory_mb=256, cpu_quota_percent=40,
                     context_iso=iso))
    m = svc.find(f"xwvm_{W}_h-1")
    assert m is not None
    cfg, vm_dir = m.config, drv.work_dir / f"xwvm_{W}_h-1"
    assert not cfg.mutable  # the final, saved configuration
    checks = {
        "IMachine.clipboardMode": cfg.values["clipboardMode"] == C.ClipboardMode_Disabled,
        "IMachine.dnDMode": cfg.values["dnDMode"] == C.DnDMode_Disabled,
        "IMachine.sharedFolders": cfg.shared_folders == [],
        "IMachine.USBControllers": cfg.usb == [],
        "IUSBDeviceFilters.deviceFilters": cfg.usb_filters == [],
        "IAudioAdapter.enabled": cfg.audio.enabled is False,
        "IVRDEServer.enabled": cfg.vrde.enabled is False,
        "INetworkAdapter.enabled": all(not n.enabled and n.attachmentType ==
                                       C.NetworkAttachmentType_Null for n in cfg.nics),
        "IMachine.CPUExecutionCap": cfg.values["CPUExecutionCap"] == 40,
        "IMachine.CPUCount / memorySize": (cfg.values["CPUCount"], cfg.values["memorySize"])
        == (2, 256),
        "ISerialPort[0]": (cfg.serials[0].enabled, cfg.serials[0].hostMode,
                           cfg.serials[0].path, cfg.serials[0].IOAddress)
        == (True, C.PortMode_RawFile, str(vm_dir / "console.log"), 0x3F8)
        and not any(p.enabled for p in cfg.serials[1:]),
        "hard disk": [(a.controller, a.port, a.type, a.medium_data.parent.location,
                       a.medium_data.parent.type, a.medium_data.parent.read_only)
                      for a in cfg.attachments if a.type == C.DeviceType_HardDisk]
        == [("SATA", 0, C.DeviceType_HardDisk, str(tpl), C.MediumType_Immutable, True)],
        "DVD": [(a.port, a.medium_data.location, a.medium_data.read_only)
                for a in cfg.attachments if a.type == C.DeviceType_DVD]
        == [(1, str(vm_dir / "context.iso"), True)],
        "exchange disk": [a.port for a in cfg.attachments if a.port == 2] == [],
    }
    assert [name for name, _, _ in policy.HARDENING] == list(checks)  # one check each
    assert [name for name, ok in checks.items() if not ok] == []
    assert cfg.boot_order[0] == C.DeviceType_HardDisk
    assert cfg.firmware.firmwareType == C.FirmwareType_BIOS
    assert m.extra == {"xwvm/worker": W, "xwvm/job": "h-1", "xwvm/dir": str(vm_dir)}
    assert W in cfg.values["description"] and "h-1" in cfg.values["description"]


def test_fake_exchange_disk_is_a_flat_vmdk_on_port_2_and_outlives_the_vm(
        drv: VirtualBoxDriver, svc: FakeService, tmp_path: Path) -> None:
    """network=none: the worker's raw exchange disk is attached read-write through a flat
    VMDK (VirtualBox attaches no raw hard disks); qemu-img, a real VMDK reader, sees the
    same bytes; VirtualBox deleting the VM's media leaves the worker's file whole."""
    raw = tmp_path / "work" / "ex.img"
    exchange.create(raw, "x-1", [], results_capacity=1 << 20)
    before = _sha(raw)
    drv.define(_spec("x-1", _template(tmp_path), exchange_disk=raw))
    m = svc.find(f"xwvm_{W}_x-1")
    assert m is not None
    vm_dir = drv.work_dir / f"xwvm_{W}_x-1"
    [att] = [a for a in m.config.attachments if a.port == 2]
    assert (att.controller, att.type, att.medium_data.format, att.medium_data.read_only) == \
        ("SATA", C.DeviceType_HardDisk, "VMDK", False)
    assert att.medium_data.location == str(vm_dir / "exchange.vmdk")
    assert att.medium_data.logical_size == raw.stat().st_size
    extent = vm_dir / "exchange-flat.vmdk"
    assert extent.stat().st_ino == raw.stat().st_ino  # the same data, written in place
    info = subprocess.run(["qemu-img", "info", "--output=json", str(vm_dir / "exchange.vmdk")],
                          capture_output=True, text=True, check=True)
    assert json.loads(info.stdout)["virtual-size"] == raw.stat().st_size
    back = tmp_path / "back.raw"
    subprocess.run(["qemu-img", "convert", "-f", "vmdk", "-O", "raw",
                    str(vm_dir / "exchange.vmdk"), str(back)], check=True)
    assert _sha(back) == before
    drv.destroy("x-1")
    assert not vm_dir.exists() and svc.find(f"xwvm_{W}_x-1") is None
    assert _sha(raw) == before  # the worker still reads its results after destroy


def test_fake_exchange_disk_of_odd_size_is_refused_and_leaves_nothing(
        drv: VirtualBoxDriver, svc: FakeService, tmp_path: Path) -> None:
    raw = tmp_path / "odd.img"
    raw.write_bytes(b"\0" * 1000)
    with pytest.raises(SpecError, match="whole number of sectors"):
        drv.define(_spec("x-2", _template(tmp_path), exchange_disk=raw))
    assert svc.find(f"xwvm_{W}_x-2") is None
    assert not (drv.work_dir / f"xwvm_{W}_x-2").exists()
    assert raw.stat().st_size == 1000


def test_virtualbox_enforces_network_none_only_unless_lan_nat(svc: FakeService,
                                                             work_dir: Path) -> None:
    assert VirtualBoxDriver(W, work_dir, api=fake_vboxapi).networks() == (NetworkPolicy.NONE,)
    assert VirtualBoxDriver(W, work_dir, api=fake_vboxapi, lan_nat=True).networks() == \
        (NetworkPolicy.NONE, NetworkPolicy.SERVER)


def test_fake_vm_files_stay_in_the_vm_folder(drv: VirtualBoxDriver, svc: FakeService,
                                            tmp_path: Path) -> None:
    drv.define(_spec("f-1", _template(tmp_path)))
    m = svc.find(f"xwvm_{W}_f-1")
    assert m is not None
    vm_dir = drv.work_dir / f"xwvm_{W}_f-1"
    assert Path(m.settings_file).parent == vm_dir
    assert sorted(p.name for p in vm_dir.iterdir()) == ["disk.vdi", f"xwvm_{W}_f-1.vbox"]


# -- disks --------------------------------------------------------------------------------

def test_fake_template_is_immutable_shared_and_released(drv: VirtualBoxDriver,
                                                        svc: FakeService,
                                                        tmp_path: Path) -> None:
    tpl = _template(tmp_path, "echo HI\n")
    before = _sha(tpl)
    for job in ("s-1", "s-2"):
        drv.define(_spec(job, tpl, disk_cap_mb=128))
        drv.start(job)
    template = svc.media[str(tpl)]
    assert template.type == C.MediumType_Immutable and template.read_only
    assert sorted(Path(c.location).parent.name for c in template.children) == \
        [f"xwvm_{W}_s-1", f"xwvm_{W}_s-2"]
    assert all(c.logical_size == 128 << 20 for c in template.children)
    _wait(lambda: drv.state("s-1") == drv.state("s-2") == VMState.SHUTOFF)
    assert "HI" in drv.console_log("s-1")
    drv.destroy("s-1")
    assert str(tpl) in svc.media  # s-2 still uses it
    drv.destroy("s-2")
    assert svc.media == {}  # closed once unused: the image cache may evict the file
    assert _sha(tpl) == before


def test_fake_kernel_boot_needs_a_bootable_template(drv: VirtualBoxDriver, svc: FakeService,
                                                   tmp_path: Path) -> None:
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"k")
    with pytest.raises(Unsupported, match="no direct kernel boot"):
        drv.define(_spec("k-1", _template(tmp_path), kernel=kernel))
    assert list(drv.work_dir.iterdir()) == [] and svc.machines == []
    drv.define(_spec("k-2", _template(tmp_path, "echo BOOTS\n"), kernel=kernel))
    assert drv.list_own() == ["k-2"]


def test_fake_non_vdi_template_is_refused_cleanly(drv: VirtualBoxDriver, svc: FakeService,
                                                  tmp_path: Path) -> None:
    qcow = tmp_path / "t.qcow2"
    qcow.write_bytes(b"QFI\xfb" + b"\0" * 508)
    with pytest.raises(DriverError, match="not a VDI or VMDK"):
        drv.define(_spec("q-1", qcow))
    assert list(drv.work_dir.iterdir()) == [] and svc.media == {}


def test_fake_failed_define_leaves_nothing(drv: VirtualBoxDriver, svc: FakeService,
                                          tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        drv.define(_spec("x-1", _template(tmp_path), context_iso=tmp_path / "none.iso"))
    assert svc.machines == [] and svc.media == {} and list(drv.work_dir.iterdir()) == []


def test_fake_foreign_machine_with_our_name_is_never_touched(
        drv: VirtualBoxDriver, svc: FakeService, tmp_path: Path) -> None:
    mgr = fake_vboxapi.VirtualBoxManager(None, None)
    vbox = mgr.getVirtualBox()
    foreign = vbox.createMachine(str(tmp_path / "own" / "x.vbox"), f"xwvm_{W}_n-1", 1, [],
                                 "", "", "", "", "")
    vbox.registerMachine(foreign)  # a volunteer's VM, not tagged by us
    assert drv.state("n-1") == VMState.MISSING and drv.list_own() == []
    with pytest.raises(DriverError):
        drv.define(_spec("n-1", _template(tmp_path)))  # VirtualBox refuses the name
    drv.destroy("n-1")
    assert [m.name for m in svc.machines] == [f"xwvm_{W}_n-1"]
    assert list(drv.work_dir.iterdir()) == []


# -- sessions, errors, probe --------------------------------------------------------------

def test_fake_session_lock_busy_is_retried_then_given_up(drv: VirtualBoxDriver,
                                                         svc: FakeService,
                                                         tmp_path: Path) -> None:
    for job in ("l-1", "l-2"):
        drv.define(_spec(job, _template(tmp_path)))
        drv.start(job)
    name = f"xwvm_{W}_l-1"
    svc.lock_busy[name] = 3  # "already locked for a session (or being unlocked)", 3 times
    svc.calls.clear()
    assert drv.stop("l-1", grace_s=0) == VMState.SHUTOFF
    assert len([c for c in svc.calls if c.startswith(f"lockMachine {name}")]) == 4
    drv.host.lock_attempts = 3
    svc.lock_busy[f"xwvm_{W}_l-2"] = 100
    with pytest.raises(DriverError, match="attempt 3.*already locked"):
        drv.stop("l-2", grace_s=0)
    svc.lock_busy.clear()
    drv.host.lock_attempts = 8


def test_fake_com_errors_are_translated_in_one_place(svc: FakeService) -> None:
    host = Host(fake_vboxapi)
    host.connect()
    cases = {"VBOX_E_OBJECT_NOT_FOUND": VMNotFound, "E_INVALIDARG": SpecError,
             "VBOX_E_NOT_SUPPORTED": SpecError, "NS_ERROR_CALL_FAILED": ConnectionLost,
             "VBOX_E_INVALID_OBJECT_STATE": DriverError, "E_ACCESSDENIED": DriverError}
    for code, kind in cases.items():
        with pytest.raises(kind) as e, host.translated("doing it"):
            raise FakeXPCOMError(code, "the message")
        assert type(e.value) is kind
        assert e.value.message == "doing it: the message"
    assert issubclass(ConnectionLost, HypervisorUnavailable)  # a dead VBoxSVC is one
    with pytest.raises(KeyError), host.translated("not COM"):
        raise KeyError("ours")


def test_fake_without_hardware_virtualization_is_unusable(work_dir: Path,
                                                          tmp_path: Path) -> None:
    fake_vboxapi.start_service(hw_virt=False)
    try:
        d = VirtualBoxDriver(W, work_dir, api=fake_vboxapi)
        result = d.probe()
        assert not result.usable and result.accel is None
        assert "VT-x/AMD-V" in result.reason and result.version == "VirtualBox 7.1.6"
        with pytest.raises(HypervisorUnavailable, match="VT-x"):
            d.define(_spec("v-1", _template(tmp_path)))
    finally:
        fake_vboxapi.stop_service()


# -- network ------------------------------------------------------------------------------

def test_fake_network_server_is_refused_without_lan_nat(drv: VirtualBoxDriver,
                                                        tmp_path: Path) -> None:
    spec = _spec("n-2", _template(tmp_path), network=NetworkPolicy.SERVER,
                 server_endpoint=("192.0.2.10", 8443))
    with pytest.raises(Unsupported, match="LAN"):
        drv.define(spec)
    assert list(drv.work_dir.iterdir()) == []


def test_fake_lan_nat_gives_one_nat_adapter_and_nothing_else(svc: FakeService, work_dir: Path,
                                                             tmp_path: Path) -> None:
    d = VirtualBoxDriver(W, work_dir, api=fake_vboxapi, lan_nat=True)
    spec = _spec("n-3", _template(tmp_path), network=NetworkPolicy.SERVER,
                 server_endpoint=("192.0.2.10", 8443))
    d.define(spec)
    cfg = svc.find(f"xwvm_{W}_n-3").config  # type: ignore[union-attr]
    nic = cfg.nics[0]
    assert (nic.enabled, nic.attachmentType) == (True, C.NetworkAttachmentType_NAT)
    assert nic.NATEngine.localhostReachable is False and nic.NATEngine.DNSPassDomain is False
    assert nic.NATEngine.redirects == []  # no port forwards: the job has no proxied ports
    assert not any(n.enabled for n in cfg.nics[1:])
    assert d.guest_endpoint(spec) == ("192.0.2.10", 8443)
    with pytest.raises(Unsupported, match="loopback"):
        d.define(_spec("n-4", _template(tmp_path), network=NetworkPolicy.SERVER,
                       server_endpoint=("127.0.0.1", 8443)))
    d.cleanup_leftovers()


def test_fake_proxied_ports_are_forwarded_from_loopback_only(svc: FakeService,
                                                              tmp_path: Path) -> None:
    vbox = fake_vboxapi.VirtualBoxManager(None, None).getVirtualBox()
    m = vbox.createMachine(str(tmp_path / "m.vbox"), "m", 1, [], "", "", "", "", "")
    settings = policy.settings_for(VMSpec("p", "w", tmp_path / "t.vdi"),
                                   policy.Placement("m", tmp_path, tmp_path / "c", None, None))
    settings.controller = None
    settings.nics[0] = network.NIC(0, "NAT", rules=network.port_forwards([(18080, 8080)]))
    settings.apply(m, C)
    assert m.getNetworkAdapter(0).NATEngine.redirects == [
        f"xwvm-8080,{C.NATProtocol_TCP},127.0.0.1,18080,,8080"]


# -- cleanup and the shared lifecycle -----------------------------------------------------

def test_fake_crashed_worker_leftover_media_are_forgotten(svc: FakeService, work_dir: Path,
                                                          tmp_path: Path) -> None:
    tpl = _template(tmp_path)
    first = VirtualBoxDriver(W, work_dir, api=fake_vboxapi)
    first.prepare_disk(_spec("c-1", tpl))   # died before define
    first.define(_spec("c-2", tpl))
    first.start("c-2")
    del first
    second = VirtualBoxDriver(W, work_dir, api=fake_vboxapi)
    assert second.cleanup_leftovers() == ["c-1", "c-2"]
    assert svc.machines == [] and svc.media == {} and list(work_dir.iterdir()) == []


def test_fake_stop_uses_the_acpi_button_when_the_guest_obeys(drv: VirtualBoxDriver,
                                                             tmp_path: Path) -> None:
    drv.define(_spec("a-1", _template(tmp_path, "acpi\nsleep 600\n")))
    drv.start("a-1")
    started = time.monotonic()
    assert drv.stop("a-1", grace_s=10) == VMState.SHUTOFF
    assert time.monotonic() - started < 3  # the guest obeyed; no forced power-off wait


def test_fake_vmjob_wall_clock_and_poweroff_handling_work_unchanged(drv: VirtualBoxDriver,
                                                                tmp_path: Path) -> None:
    from xwvm.client.sdk import Client
    from xwvm.worker.vmjob import VMJobRunner, VMOptions
    no_server = Client("https://127.0.0.1:9", timeout=1)  # unreachable: no nested beats
    runner = VMJobRunner(drv, images=None, client=no_server,  # type: ignore[arg-type]
                         opts=VMOptions(W, tmp_path, "https://s:1", "", hang_timeout_s=0.5,
                                        poll_s=0.05), verify=lambda _t: None)
    drv.define(_spec("m-1", _template(tmp_path, "acpi\necho WORKING\nsleep 600\n")))
    drv.start("m-1")
    assert runner._monitor(JobDescription("m-1", wall_clock_s=1), threading.Event()) == \
        "wall_clock"
    assert drv.state("m-1") == VMState.SHUTOFF
    # (hang detection reads the same console_log; vmjob checks it every 5 s: too slow here)
    drv.define(_spec("m-3", _template(tmp_path, "echo BYE\n")))
    drv.start("m-3")
    assert runner._monitor(JobDescription("m-3"), threading.Event()) == "off"


def test_fake_vmjob_stops_a_guest_that_floods_its_console(drv: VirtualBoxDriver,
                                                         tmp_path: Path) -> None:
    """A guest printing without end: the worker stops it once its console passes the cap
    (VirtualBox's raw console file has no rotation, unlike virtlogd's). The flood is
    written where the fake guest's COM1 goes."""
    from xwvm.client.sdk import Client
    from xwvm.worker.drivers.console import CONSOLE_MAX_BYTES
    from xwvm.worker.vmjob import VMJobRunner, VMOptions
    no_server = Client("https://127.0.0.1:9", timeout=1)
    runner = VMJobRunner(drv, images=None, client=no_server,  # type: ignore[arg-type]
                         opts=VMOptions(W, tmp_path, "https://s:1", "", hang_timeout_s=600,
                                        poll_s=0.05), verify=lambda _t: None)
    drv.define(_spec("f-1", _template(tmp_path, "acpi\necho FLOOD\nsleep 600\n")))
    drv.start("f-1")
    with open(drv._console_path("f-1"), "ab") as f:
        f.write(b"y" * (CONSOLE_MAX_BYTES + 1))
    assert runner._monitor(JobDescription("f-1"), threading.Event()) == "console_flood"
    assert drv.state("f-1") == VMState.SHUTOFF
    assert len(drv.console_log("f-1")) <= 64 * 1024  # only its end is ever read
    outcome = runner._stopped(JobDescription("f-1"), "console_flood", drv.console_log("f-1"))
    assert outcome.status == "ERROR" and "MiB to its console" in outcome.message


def test_real_vboxapi_without_virtualbox_reads_as_unreachable(work_dir: Path) -> None:
    """Not the fake: vbox-sdk's own module, on a host without VirtualBox (ours). It
    imports; connecting fails; the probe says so and make_driver wires it."""
    import vboxapi  # noqa: F401 (vbox-sdk is a dev dependency: imported, not skipped)

    from xwvm.worker.drivers import make_driver
    d = make_driver("virtualbox", W, work_dir)
    assert isinstance(d, VirtualBoxDriver)
    result = d.probe()
    assert not result.usable and result.accel is None
    assert "unreachable" in result.reason and "is VirtualBox installed?" in result.reason
    with pytest.raises(HypervisorUnavailable):
        d.define(_spec("r-1", work_dir / "t.vdi"))
    assert list(work_dir.iterdir()) == []
