"""libvirt domain XML as typed objects, and back: representation only, no decisions.

Each class writes and reads its own element (``to_element``/``from_element``), side by
side, so building and parsing cannot drift apart (tests round-trip every field).
What goes into a domain — the hardening profile — is decided in policy.py.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
XWVM_NS = "http://xwvm.org/xmlns/libvirt/domain/1.0"
ET.register_namespace("qemu", QEMU_NS)
ET.register_namespace("xwvm", XWVM_NS)


def _q(ns: str, tag: str) -> str:
    return f"{{{ns}}}{tag}"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def _text(el: ET.Element, path: str) -> str | None:
    found = el.find(path)
    return found.text if found is not None else None


@dataclass
class OwnerTag:
    """``<metadata><xwvm:vm>``: which worker made this VM, for which job, where its files are."""

    worker_id: str
    job_uid: str
    vm_dir: str

    def to_element(self) -> ET.Element:
        el = ET.Element(_q(XWVM_NS, "vm"))
        _sub(el, _q(XWVM_NS, "worker"), self.worker_id)
        _sub(el, _q(XWVM_NS, "job"), self.job_uid)
        _sub(el, _q(XWVM_NS, "dir"), self.vm_dir)
        return el

    def to_xml(self) -> str:
        return ET.tostring(self.to_element(), encoding="unicode")

    @classmethod
    def from_element(cls, el: ET.Element) -> OwnerTag:
        # libvirt's virDomainGetMetadata hands the element back without its namespace.
        fields = {child.tag.rpartition("}")[2]: child.text or "" for child in el}
        return cls(worker_id=fields.get("worker", ""), job_uid=fields.get("job", ""),
                   vm_dir=fields.get("dir", ""))

    @classmethod
    def from_xml(cls, xml: str) -> OwnerTag:
        return cls.from_element(ET.fromstring(xml))


@dataclass
class OSBoot:
    """``<os>``: machine type, and either direct kernel boot or a boot device."""

    arch: str = "x86_64"
    machine: str = "pc"
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None
    boot_dev: str | None = None

    def to_element(self) -> ET.Element:
        el = ET.Element("os")
        _sub(el, "type", "hvm", arch=self.arch, machine=self.machine)
        for tag in ("kernel", "initrd", "cmdline"):
            value = getattr(self, tag)
            if value is not None:
                _sub(el, tag, value)
        if self.boot_dev is not None:
            _sub(el, "boot", dev=self.boot_dev)
        return el

    @classmethod
    def from_element(cls, el: ET.Element) -> OSBoot:
        t = el.find("type")
        boot = el.find("boot")
        return cls(arch=t.get("arch", "") if t is not None else "",
                   machine=t.get("machine", "") if t is not None else "",
                   kernel=_text(el, "kernel"), initrd=_text(el, "initrd"),
                   cmdline=_text(el, "cmdline"),
                   boot_dev=boot.get("dev") if boot is not None else None)


@dataclass
class CPUTune:
    """``<cputune>``: each vCPU may run ``quota`` µs of every ``period`` µs."""

    period: int
    quota: int

    def to_element(self) -> ET.Element:
        el = ET.Element("cputune")
        _sub(el, "period", str(self.period))
        _sub(el, "quota", str(self.quota))
        return el

    @classmethod
    def from_element(cls, el: ET.Element) -> CPUTune:
        return cls(period=int(_text(el, "period") or 0), quota=int(_text(el, "quota") or 0))


@dataclass
class BackingStore:
    """``<backingStore>``: one read-only image under a disk; ``relabel=False`` keeps
    libvirt from chown-ing it to the QEMU user (a shared template must stay the host's)."""

    path: str
    format: str
    relabel: bool = True

    def to_element(self) -> ET.Element:
        el = ET.Element("backingStore", type="file")
        _sub(el, "format", type=self.format)
        src = _sub(el, "source", file=self.path)
        if not self.relabel:
            _sub(src, "seclabel", model="dac", relabel="no")
        _sub(el, "backingStore")  # the chain ends here
        return el

    @classmethod
    def from_element(cls, el: ET.Element) -> BackingStore:
        fmt = el.find("format")
        src = el.find("source")
        label = src.find("seclabel") if src is not None else None
        return cls(path=src.get("file", "") if src is not None else "",
                   format=fmt.get("type", "") if fmt is not None else "",
                   relabel=not (label is not None and label.get("relabel") == "no"))


@dataclass
class Disk:
    """``<disk type='file'>``: a disk or a CD-ROM backed by a file."""

    device: str  # "disk" | "cdrom"
    path: str
    format: str
    target_dev: str
    bus: str
    readonly: bool = False
    backing: BackingStore | None = None

    def to_element(self) -> ET.Element:
        el = ET.Element("disk", type="file", device=self.device)
        _sub(el, "driver", name="qemu", type=self.format)
        _sub(el, "source", file=self.path)
        if self.backing is not None:
            el.append(self.backing.to_element())
        _sub(el, "target", dev=self.target_dev, bus=self.bus)
        if self.readonly:
            _sub(el, "readonly")
        return el

    @classmethod
    def from_element(cls, el: ET.Element) -> Disk:
        drv, src, tgt = el.find("driver"), el.find("source"), el.find("target")
        back = el.find("backingStore")
        return cls(device=el.get("device", ""),
                   path=src.get("file", "") if src is not None else "",
                   format=drv.get("type", "") if drv is not None else "",
                   target_dev=tgt.get("dev", "") if tgt is not None else "",
                   bus=tgt.get("bus", "") if tgt is not None else "",
                   readonly=el.find("readonly") is not None,
                   backing=(BackingStore.from_element(back)
                            if back is not None and back.find("source") is not None else None))


@dataclass
class Controller:
    """``<controller>``: ``model='none'`` removes one the machine would otherwise get."""

    type: str
    model: str

    def to_element(self) -> ET.Element:
        return ET.Element("controller", type=self.type, model=self.model)

    @classmethod
    def from_element(cls, el: ET.Element) -> Controller:
        return cls(type=el.get("type", ""), model=el.get("model", ""))


@dataclass
class SerialFile:
    """``<serial type='file'>``: the guest's first serial port, written to a host file."""

    path: str

    def to_element(self) -> ET.Element:
        el = ET.Element("serial", type="file")
        _sub(el, "source", path=self.path)
        _sub(el, "target", port="0")
        return el

    @classmethod
    def from_element(cls, el: ET.Element) -> SerialFile:
        src = el.find("source")
        return cls(path=src.get("path", "") if src is not None else "")


@dataclass
class DomainConfig:
    """``<domain>``: the whole VM. ``qemu_args`` and ``qemu_caps_del`` go to libvirt's
    QEMU namespace (``<qemu:commandline>``, ``<qemu:capabilities>``)."""

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

    def to_element(self) -> ET.Element:
        dom = ET.Element("domain", type=self.type)
        _sub(dom, "name", self.name)
        if self.owner is not None:
            _sub(dom, "metadata").append(self.owner.to_element())
        _sub(dom, "memory", str(self.memory_mib), unit="MiB")
        _sub(dom, "vcpu", str(self.vcpus))
        if self.cputune is not None:
            dom.append(self.cputune.to_element())
        if self.cpu_mode is not None:
            _sub(dom, "cpu", mode=self.cpu_mode, check="none")
        dom.append(self.os.to_element())
        if self.acpi:
            _sub(_sub(dom, "features"), "acpi")
        _sub(dom, "clock", offset="utc")
        for tag in ("on_poweroff", "on_reboot", "on_crash"):
            _sub(dom, tag, getattr(self, tag))
        devices = _sub(dom, "devices")
        for item in (*self.disks, *self.controllers, *self.serials):
            devices.append(item.to_element())
        if self.memballoon is not None:
            _sub(devices, "memballoon", model=self.memballoon)
        if self.qemu_args:
            cmd = _sub(dom, _q(QEMU_NS, "commandline"))
            for arg in self.qemu_args:
                _sub(cmd, _q(QEMU_NS, "arg"), value=arg)
        if self.qemu_caps_del:
            caps = _sub(dom, _q(QEMU_NS, "capabilities"))
            for cap in self.qemu_caps_del:
                _sub(caps, _q(QEMU_NS, "del"), capability=cap)
        return dom

    def to_xml(self) -> str:
        el = self.to_element()
        ET.indent(el)
        return ET.tostring(el, encoding="unicode") + "\n"

    @classmethod
    def from_element(cls, dom: ET.Element) -> DomainConfig:
        devices = dom.find("devices")
        devs: list[ET.Element] = list(devices) if devices is not None else []
        owner = dom.find(f"metadata/{_q(XWVM_NS, 'vm')}")
        tune = dom.find("cputune")
        balloon = next((d for d in devs if d.tag == "memballoon"), None)
        os_el = dom.find("os")
        return cls(
            name=_text(dom, "name") or "",
            type=dom.get("type", ""),
            memory_mib=_memory_mib(dom.find("memory")),
            vcpus=int(_text(dom, "vcpu") or 0),
            os=OSBoot.from_element(os_el) if os_el is not None else OSBoot(),
            acpi=dom.find("features/acpi") is not None,
            cputune=(CPUTune.from_element(tune)
                     if tune is not None and tune.find("quota") is not None else None),
            cpu_mode=dom.find("cpu").get("mode") if dom.find("cpu") is not None else None,
            on_poweroff=_text(dom, "on_poweroff") or "",
            on_reboot=_text(dom, "on_reboot") or "",
            on_crash=_text(dom, "on_crash") or "",
            disks=[Disk.from_element(d) for d in devs if d.tag == "disk"],
            controllers=[Controller.from_element(d) for d in devs
                         if d.tag == "controller" and d.get("model")],
            serials=[SerialFile.from_element(d) for d in devs
                     if d.tag == "serial" and d.get("type") == "file"],
            memballoon=balloon.get("model") if balloon is not None else None,
            owner=OwnerTag.from_element(owner) if owner is not None else None,
            qemu_args=[a.get("value", "") for a in dom.iterfind(
                f"{_q(QEMU_NS, 'commandline')}/{_q(QEMU_NS, 'arg')}")],
            qemu_caps_del=[c.get("capability", "") for c in dom.iterfind(
                f"{_q(QEMU_NS, 'capabilities')}/{_q(QEMU_NS, 'del')}")],
        )

    @classmethod
    def from_xml(cls, xml: str) -> DomainConfig:
        return cls.from_element(ET.fromstring(xml))


_UNITS = {"KiB": 1 / 1024, "k": 1 / 1024, "MiB": 1, "M": 1, "GiB": 1024, "G": 1024}


def _memory_mib(el: ET.Element | None) -> int:
    if el is None or not el.text:
        return 0
    return int(int(el.text) * _UNITS.get(el.get("unit", "KiB"), 1 / 1024))
