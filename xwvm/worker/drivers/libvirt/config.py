"""libvirt domain XML as typed objects, and back: representation only, no decisions.

Each class has one field table (``FIELDS``, see xmlfields.py) that drives both directions,
so building and parsing cannot drift apart (tests round-trip every golden domain and
check that every field is in its table). What goes into a domain — the hardening
profile — is decided in policy.py.
"""

from __future__ import annotations

import copy
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from xwvm.worker.drivers.libvirt.xmlfields import (
    QEMU_NS,
    XWVM_NS,
    Child,
    Const,
    Flag,
    Value,
    Values,
    XMLObject,
)

__all__ = ["QEMU_NS", "XWVM_NS", "BackingStore", "CPUTune", "Controller", "Disk",
           "DomainConfig", "OSBoot", "OwnerTag", "SerialFile"]


@dataclass
class OwnerTag(XMLObject):
    """``<metadata><xwvm:vm>``: which worker made this VM, for which job, where its files are."""

    TAG = "xwvm:vm"
    FIELDS = (Value("worker_id", "xwvm:worker", missing=""),
              Value("job_uid", "xwvm:job", missing=""),
              Value("vm_dir", "xwvm:dir", missing=""))

    worker_id: str
    job_uid: str
    vm_dir: str

    @classmethod
    def from_element(cls, el: ET.Element) -> OwnerTag:
        # libvirt's virDomainGetMetadata hands the element back without its namespace.
        el = copy.deepcopy(el)
        for e in el.iter():
            if not e.tag.startswith("{"):
                e.tag = f"{{{XWVM_NS}}}{e.tag}"
        return super().from_element(el)


@dataclass
class OSBoot(XMLObject):
    """``<os>``: machine type, and either direct kernel boot or a boot device."""

    TAG = "os"
    FIELDS = (Value("arch", "type/@arch", missing=""),
              Value("machine", "type/@machine", missing=""),
              Const(None, "type", "hvm"),
              Value("kernel", "kernel"), Value("initrd", "initrd"), Value("cmdline", "cmdline"),
              Value("boot_dev", "boot/@dev"))

    arch: str = "x86_64"
    machine: str = "pc"
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None
    boot_dev: str | None = None


@dataclass
class CPUTune(XMLObject):
    """``<cputune>``: each vCPU may run ``quota`` µs of every ``period`` µs."""

    TAG = "cputune"
    FIELDS = (Value("period", "period", from_str=int, missing=0),
              Value("quota", "quota", from_str=int, missing=0))

    period: int
    quota: int

    @classmethod
    def present(cls, el: ET.Element) -> bool:
        return el.find("quota") is not None


@dataclass
class BackingStore(XMLObject):
    """``<backingStore>``: one read-only image under a disk; ``relabel=False`` keeps
    libvirt from chown-ing it to the QEMU user (a shared template must stay the host's)."""

    TAG = "backingStore"
    FIELDS = (Const(None, "@type", "file"),
              Value("format", "format/@type", missing=""),
              Value("path", "source/@file", missing=""),
              Flag("relabel", "source/seclabel", {"model": "dac", "relabel": "no"},
                   present=False),
              Const(None, "backingStore"))  # the chain ends here

    path: str
    format: str
    relabel: bool = True

    @classmethod
    def present(cls, el: ET.Element) -> bool:
        return el.find("source") is not None


@dataclass
class Disk(XMLObject):
    """``<disk type='file'>``: a disk or a CD-ROM backed by a file."""

    TAG = "disk"
    FIELDS = (Const(None, "@type", "file"),
              Value("device", "@device", missing=""),
              Const(None, "driver/@name", "qemu"),
              Value("format", "driver/@type", missing=""),
              Value("path", "source/@file", missing=""),
              Child("backing", "", BackingStore),
              Value("target_dev", "target/@dev", missing=""),
              Value("bus", "target/@bus", missing=""),
              Flag("readonly", "readonly"))

    device: str  # "disk" | "cdrom"
    path: str
    format: str
    target_dev: str
    bus: str
    readonly: bool = False
    backing: BackingStore | None = None


@dataclass
class Controller(XMLObject):
    """``<controller>``: ``model='none'`` removes one the machine would otherwise get."""

    TAG = "controller"
    FIELDS = (Value("type", "@type", missing=""), Value("model", "@model", missing=""))

    type: str
    model: str

    @classmethod
    def present(cls, el: ET.Element) -> bool:
        return bool(el.get("model"))


@dataclass
class SerialFile(XMLObject):
    """``<serial type='file'>``: the guest's first serial port, written to a host file."""

    TAG = "serial"
    FIELDS = (Const(None, "@type", "file"),
              Value("path", "source/@path", missing=""),
              Const(None, "target/@port", "0"))

    path: str

    @classmethod
    def present(cls, el: ET.Element) -> bool:
        return el.get("type") == "file"


_UNITS = {"KiB": 1 / 1024, "k": 1 / 1024, "MiB": 1, "M": 1, "GiB": 1024, "G": 1024}


def _memory_mib(el: ET.Element) -> int:
    if not el.text:
        return 0
    return int(int(el.text) * _UNITS.get(el.get("unit", "KiB"), 1 / 1024))


@dataclass
class DomainConfig(XMLObject):
    """``<domain>``: the whole VM. ``qemu_args`` and ``qemu_caps_del`` go to libvirt's
    QEMU namespace (``<qemu:commandline>``, ``<qemu:capabilities>``)."""

    TAG = "domain"
    FIELDS = (Value("type", "@type", missing=""),
              Value("name", "name", missing=""),
              Child("owner", "metadata", OwnerTag),
              Value("memory_mib", "memory", missing=0, read=_memory_mib),
              Const(None, "memory/@unit", "MiB"),
              Value("vcpus", "vcpu", from_str=int, missing=0),
              Child("cputune", "", CPUTune),
              Value("cpu_mode", "cpu/@mode"),
              Const(None, "cpu/@check", "none", when="cpu_mode"),
              Child("os", "", OSBoot, default=OSBoot),
              Flag("acpi", "features/acpi"),
              Const(None, "clock/@offset", "utc"),
              Value("on_poweroff", "on_poweroff", missing=""),
              Value("on_reboot", "on_reboot", missing=""),
              Value("on_crash", "on_crash", missing=""),
              Const(None, "devices"),
              Child("disks", "devices", Disk, many=True),
              Child("controllers", "devices", Controller, many=True),
              Child("serials", "devices", SerialFile, many=True),
              Value("memballoon", "devices/memballoon/@model"),
              Values("qemu_args", "qemu:commandline/qemu:arg/@value"),
              Values("qemu_caps_del", "qemu:capabilities/qemu:del/@capability"))

    name: str
    type: str  # "qemu" (TCG) | "kvm"
    memory_mib: int
    vcpus: int
    os: OSBoot
    acpi: bool = True
    cputune: CPUTune | None = None
    cpu_mode: str | None = None  # <cpu mode=...>: "maximum" (TCG), "host-passthrough" (KVM)
    on_poweroff: str = "destroy"
    on_reboot: str = "destroy"
    on_crash: str = "destroy"
    disks: list[Disk] = field(default_factory=list)
    controllers: list[Controller] = field(default_factory=list)
    serials: list[SerialFile] = field(default_factory=list)
    memballoon: str | None = None  # a model; "none" removes the default balloon
    owner: OwnerTag | None = None
    qemu_args: list[str] = field(default_factory=list)
    qemu_caps_del: list[str] = field(default_factory=list)
