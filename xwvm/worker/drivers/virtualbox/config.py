"""VirtualBox machine settings as typed objects, written onto an IMachine: no decisions.

:class:`MachineSettings` says everything a VM of ours gets; :meth:`MachineSettings.apply`
writes it through the API onto a machine locked for writing (the caller saves). What goes
into it — the hardening profile — is decided in policy.py. Enum values are named as in
the API (``"Disabled"`` for ``ClipboardMode_Disabled``) and looked up in the binding's
constants, so a name that VirtualBox does not have fails loudly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

NIC_SLOTS = 8    # network adapters of the PIIX3 chipset (VirtualBox's default)
SERIAL_SLOTS = 4
COM1 = (0x3F8, 4)  # I/O address and IRQ of the first serial port


@dataclass
class NATRule:
    """A NAT port forward: TCP ``host_ip:host_port`` on the host to the guest's port."""

    name: str
    host_ip: str
    host_port: int
    guest_port: int


@dataclass
class NIC:
    slot: int
    attachment: str = "Null"   # NetworkAttachmentType
    localhost_reachable: bool = False
    dns_pass_domain: bool = False
    rules: list[NATRule] = field(default_factory=list)

    @property
    def enabled(self) -> bool:
        return self.attachment != "Null"


@dataclass
class Drive:
    port: int
    device: str          # DeviceType: "HardDisk" | "DVD"
    medium: Any          # an IMedium


@dataclass
class Controller:
    name: str
    bus: str             # StorageBus
    ports: int


@dataclass
class MachineSettings:
    description: str
    extra_data: dict[str, str]
    cpus: int
    memory_mb: int
    cpu_cap: int                       # CPUExecutionCap, percent of one host CPU per vCPU
    firmware: str = "BIOS"
    boot_order: list[str] = field(default_factory=lambda: ["HardDisk"])
    clipboard: str = "Disabled"
    dnd: str = "Disabled"
    audio: bool = False
    vrde: bool = False
    usb: bool = False                  # False: no USB controller, no device filter
    shared_folders: bool = False       # False: every shared folder removed
    console_file: str | None = None    # COM1 to this file (PortMode RawFile)
    controller: Controller | None = None
    drives: list[Drive] = field(default_factory=list)
    nics: list[NIC] = field(default_factory=lambda: [NIC(i) for i in range(NIC_SLOTS)])

    def apply(self, m: Any, c: Any) -> None:
        """Write every setting onto ``m``, an IMachine locked for writing (or not yet
        registered). Settings that exist on the machine but not here are removed."""
        m.description = self.description
        for key, value in self.extra_data.items():
            m.setExtraData(key, value)
        m.CPUCount = self.cpus
        m.memorySize = self.memory_mb
        m.CPUExecutionCap = self.cpu_cap
        m.firmwareSettings.firmwareType = _enum(c, "FirmwareType", self.firmware)
        order = [*self.boot_order, "Null", "Null", "Null", "Null"][:4]
        for position, device in enumerate(order, start=1):
            m.setBootOrder(position, _enum(c, "DeviceType", device))
        m.clipboardMode = _enum(c, "ClipboardMode", self.clipboard)
        m.dnDMode = _enum(c, "DnDMode", self.dnd)
        m.audioSettings.adapter.enabled = self.audio
        m.VRDEServer.enabled = self.vrde
        self._apply_usb(m)
        if not self.shared_folders:
            for folder in list(m.sharedFolders):
                m.removeSharedFolder(folder.name)
        self._apply_serial(m, c)
        self._apply_storage(m, c)
        for nic in self.nics:
            self._apply_nic(m.getNetworkAdapter(nic.slot), nic, c)

    def _apply_usb(self, m: Any) -> None:
        if self.usb:
            return
        for ctl in list(m.USBControllers):
            m.removeUSBController(ctl.name)
        filters = m.USBDeviceFilters
        for _ in list(filters.deviceFilters):
            filters.removeDeviceFilter(0)

    def _apply_serial(self, m: Any, c: Any) -> None:
        for slot in range(SERIAL_SLOTS):
            port = m.getSerialPort(slot)
            if slot == 0 and self.console_file is not None:
                port.IOAddress, port.IRQ = COM1
                port.hostMode = c.PortMode_RawFile
                port.path = self.console_file
                port.enabled = True
            else:
                port.enabled = False

    def _apply_storage(self, m: Any, c: Any) -> None:
        if self.controller is None:
            return
        ctl = m.addStorageController(self.controller.name,
                                     _enum(c, "StorageBus", self.controller.bus))
        ctl.portCount = self.controller.ports
        for drive in self.drives:
            m.attachDevice(self.controller.name, drive.port, 0,
                           _enum(c, "DeviceType", drive.device), drive.medium)

    @staticmethod
    def _apply_nic(adapter: Any, nic: NIC, c: Any) -> None:
        if not nic.enabled:
            adapter.enabled = False
            adapter.attachmentType = c.NetworkAttachmentType_Null
            return
        adapter.attachmentType = _enum(c, "NetworkAttachmentType", nic.attachment)
        nat = adapter.NATEngine
        for rule in list(nat.redirects):
            nat.removeRedirect(rule.split(",", 1)[0])
        for rule in nic.rules:
            nat.addRedirect(rule.name, c.NATProtocol_TCP, rule.host_ip, rule.host_port, "",
                            rule.guest_port)
        nat.localhostReachable = nic.localhost_reachable
        nat.DNSPassDomain = nic.dns_pass_domain
        adapter.enabled = True


def _enum(c: Any, enum: str, name: str) -> int:
    return int(getattr(c, f"{enum}_{name}"))
