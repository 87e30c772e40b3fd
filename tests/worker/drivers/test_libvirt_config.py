"""The libvirt domain XML: golden files, round trip, hardening, and libvirt's own checks."""

from __future__ import annotations

import os
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import fields, replace
from pathlib import Path

import libvirt
import pytest

from xwvm.protocol.vocab import NetworkPolicy
from xwvm.worker.drivers import SpecError, Unsupported, VMSpec
from xwvm.worker.drivers.libvirt import LibvirtDriver
from xwvm.worker.drivers.libvirt.config import (
    QEMU_NS,
    BackingStore,
    Controller,
    CPUTune,
    Disk,
    DomainConfig,
    OSBoot,
    OwnerTag,
    SerialFile,
)

GOLDEN = Path(__file__).parent / "golden"
WORK = Path("/var/lib/xwvm/work")
BASE = VMSpec(job_uid="job-1", worker_id="w1", base_image=Path("/var/cache/xwvm/base.qcow2"))
SPECS = {
    "none": BASE,
    "server": replace(BASE, vcpus=2, memory_mb=1024, cpu_quota_percent=50, disk_cap_mb=4096,
                      context_iso=Path("/tmp/ctx.iso"), kernel=Path("/boot/vmlinuz"),
                      initrd=Path("/boot/initrd.img"), cmdline="console=ttyS0 quiet",
                      network=NetworkPolicy.SERVER, server_endpoint=("192.0.2.10", 8443)),
    "offline": replace(BASE, context_iso=Path("/tmp/ctx.iso"), kernel=Path("/boot/vmlinuz"),
                       exchange_disk=Path("/var/lib/xwvm/vm/job-1-exchange.img")),
}
FORBIDDEN_DEVICES = ("graphics", "video", "sound", "audio", "hostdev", "filesystem",
                     "redirdev", "smartcard", "channel", "interface", "tpm", "shmem",
                     "input", "watchdog", "rng", "vsock", "parallel")


def _driver() -> LibvirtDriver:
    drv = LibvirtDriver("w1", WORK)
    drv.socat = "/usr/bin/socat"  # the golden files must not depend on the host's PATH
    return drv


def _xml(name: str, accel: str = "tcg") -> str:
    return _driver().domain_xml(SPECS[name], accel)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_golden(name: str) -> None:
    golden = GOLDEN / f"{name}.xml"
    if os.environ.get("XWVM_REGEN_GOLDEN"):
        golden.write_text(_xml(name))
    assert _xml(name) == golden.read_text()


@pytest.mark.parametrize("name", sorted(SPECS))
def test_round_trip(name: str) -> None:
    xml = _xml(name)
    dom = DomainConfig.from_xml(xml)
    assert dom.to_xml() == xml
    # every field the policy sets is exercised by at least one golden spec
    assert dom.owner is not None and dom.cputune is not None and dom.disks


@pytest.mark.parametrize("name", sorted(SPECS))
def test_libvirt_schema_accepts(name: str, tmp_path: Path, vm_host: None) -> None:
    path = tmp_path / "d.xml"
    path.write_text(_xml(name))
    proc = subprocess.run(["virt-xml-validate", str(path), "domain"], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", sorted(SPECS))
def test_libvirt_test_driver_defines(name: str) -> None:
    conn = libvirt.open("test:///default")
    try:
        dom = conn.defineXML(_xml(name))
        parsed = ET.fromstring(dom.XMLDesc(0))
        assert parsed.find("devices/disk/backingStore/source/seclabel") is not None
        dom.undefine()
    finally:
        conn.close()


@pytest.mark.parametrize("name", sorted(SPECS))
def test_what_libvirt_gives_back_parses_to_the_same_domain(name: str) -> None:
    """The field tables read libvirt's own rendering (memory in KiB, its added elements)
    as what we wrote; its test driver keeps no QEMU namespace and adds a boot device."""
    ours = DomainConfig.from_xml(_xml(name))
    conn = libvirt.open("test:///default")
    try:
        dom = conn.defineXML(_xml(name))
        back = DomainConfig.from_xml(dom.XMLDesc(0))
        dom.undefine()
    finally:
        conn.close()
    back.qemu_args, back.qemu_caps_del = ours.qemu_args, ours.qemu_caps_del
    back.os.boot_dev = ours.os.boot_dev
    assert back == ours


@pytest.mark.parametrize("cls", [DomainConfig, OSBoot, CPUTune, BackingStore, Disk,
                                 Controller, SerialFile, OwnerTag])
def test_every_field_is_bound_once_in_its_table(cls: type) -> None:
    bound = [b.attr for b in cls.FIELDS if b.attr is not None]
    assert sorted(bound) == sorted(f.name for f in fields(cls))


@pytest.mark.parametrize("name", sorted(SPECS))
def test_hardening(name: str) -> None:
    root = ET.fromstring(_xml(name))
    devices = root.find("devices")
    assert devices is not None
    for tag in FORBIDDEN_DEVICES:
        assert devices.find(tag) is None, tag
    assert devices.find("controller[@type='usb']").get("model") == "none"  # type: ignore[union-attr]
    assert devices.find("memballoon").get("model") == "none"  # type: ignore[union-attr]
    for event in ("on_poweroff", "on_reboot", "on_crash"):
        assert root.findtext(event) == "destroy"
    assert root.find("features/acpi") is not None
    assert root.get("type") == "qemu"
    assert root.find("devices/disk[@device='disk']/backingStore/source/seclabel").get(
        "relabel") == "no"  # type: ignore[union-attr]
    cdrom = root.find("devices/disk[@device='cdrom']")
    if cdrom is not None:
        assert cdrom.find("readonly") is not None
    args = [a.get("value") for a in root.iter(f"{{{QEMU_NS}}}arg")]
    sandbox = args[args.index("-sandbox") + 1]
    assert sandbox.startswith("on,") and "obsolete=deny" in sandbox
    assert "resourcecontrol=deny" in sandbox
    caps = [c.get("capability") for c in root.iter(f"{{{QEMU_NS}}}del")]
    assert caps == ["seccomp-sandbox", "seccomp-blacklist"]


def test_caps_in_xml() -> None:
    root = ET.fromstring(_xml("server"))
    assert root.findtext("vcpu") == "2"
    assert root.find("memory").text == "1024"  # type: ignore[union-attr]
    assert root.findtext("cputune/period") == "100000"
    assert root.findtext("cputune/quota") == "50000"


def test_network_none_has_no_nic_and_spawn_denied() -> None:
    args = [a.get("value") for a in ET.fromstring(_xml("none")).iter(f"{{{QEMU_NS}}}arg")]
    assert "-netdev" not in args and "-device" not in args and "-nic" not in args
    assert "spawn=deny" in args[args.index("-sandbox") + 1]
    assert "elevateprivileges=deny" in args[args.index("-sandbox") + 1]


def test_exchange_disk_is_a_writable_raw_virtio_disk_of_its_own() -> None:
    """network=none's inputs and results: vdb, raw, writable, in place (not copied: the
    worker reads the guest's results from that very file after poweroff)."""
    root = ET.fromstring(_xml("offline"))
    disks = [(d.get("device"), d.find("target").get("dev"), d.find("target").get("bus"),  # type: ignore[union-attr]
              d.find("driver").get("type"), d.find("source").get("file"),  # type: ignore[union-attr]
              d.find("readonly") is not None) for d in root.iter("disk")]
    assert ("disk", "vdb", "virtio", "raw", "/var/lib/xwvm/vm/job-1-exchange.img", False) \
        in disks
    assert [d[1] for d in disks] == ["vda", "vdb", "sda"]
    [vdb] = [d for d in root.iter("disk") if d.find("target").get("dev") == "vdb"]  # type: ignore[union-attr]
    assert vdb.find("backingStore") is None
    assert [d for d in ET.fromstring(_xml("none")).iter("disk")
            if d.find("target").get("dev") == "vdb"] == []  # type: ignore[union-attr]


def test_vdi_templates_are_not_for_libvirt() -> None:
    with pytest.raises(Unsupported, match="boots qcow2 or raw templates, not vdi"):
        _driver().prepare_disk(replace(BASE, base_format="vdi"))


def test_network_server_is_restricted_to_one_forward() -> None:
    args = [a.get("value") for a in ET.fromstring(_xml("server")).iter(f"{{{QEMU_NS}}}arg")]
    netdev = args[args.index("-netdev") + 1]
    assert netdev.split(",") == [
        "user", "id=xwnet0", "restrict=on", "ipv6=off",
        # the helper reaches only the VM's forwarder in the worker, never the server itself
        "guestfwd=tcp:10.0.2.100:8443-cmd:/usr/bin/socat - "
        f"UNIX-CONNECT:{WORK}/xwvm_w1_job-1/server.sock"]
    assert "hostfwd" not in netdev and "192.0.2.10" not in netdev
    assert _driver().guest_endpoint(SPECS["server"]) == ("10.0.2.100", 8443)
    assert _driver().guest_endpoint(SPECS["none"]) is None


def test_network_server_refuses_a_work_dir_qemu_would_misparse() -> None:
    drv = LibvirtDriver("w1", Path("/var/lib/xwvm/a,b"))
    drv.socat = "/usr/bin/socat"
    with pytest.raises(Unsupported, match="letters, digits"):
        drv.domain_xml(SPECS["server"])


def test_network_internet_is_refused() -> None:
    spec = replace(SPECS["server"], network=NetworkPolicy.INTERNET)
    with pytest.raises(Unsupported, match="egress proxy that blocks LAN ranges"):
        _driver().domain_xml(spec)


@pytest.mark.parametrize("change, problem", [
    ({"job_uid": "a_b"}, "job_uid"),
    ({"job_uid": "../x"}, "job_uid"),
    ({"worker_id": ""}, "worker_id"),
    ({"base_image": Path("rel.qcow2")}, "base_image"),
    ({"base_format": "qed"}, "base_format"),
    ({"cpu_quota_percent": 0}, "cpu_quota_percent"),
    ({"memory_mb": 1}, "memory_mb"),
    ({"network": NetworkPolicy.SERVER}, "server_endpoint"),
    ({"network": NetworkPolicy.SERVER, "server_endpoint": ("h,ost", 1)}, "server_endpoint"),
    ({"initrd": Path("/i")}, "need a kernel"),
])
def test_spec_validation(change: dict[str, object], problem: str) -> None:
    with pytest.raises(SpecError, match=problem):
        replace(BASE, **change).validate()  # type: ignore[arg-type]
