"""The hardening profile for VirtualBox: turns every VMSpec into the one machine shape
xwvm allows, in the spirit of the libvirt profile (libvirt/policy.py).

A flat list of small steps, each owning one concern, applied to every VM (and to the
probe guest); config.py only writes what is decided here. :data:`HARDENING` lists each
setting with its value, and a test asserts every one on the fake machine's final
configuration.

What a VM gets: vCPU count, memory, a CPU execution cap, BIOS booting its differencing
disk (SATA port 0) over the immutable template, the context ISO as a read-only DVD (SATA
port 1), the job's exchange disk (SATA port 2, a flat VMDK over it), COM1 to
a file, tags (description and extra data). What it never gets: clipboard, drag-and-drop,
shared folders, USB controllers or device filters, audio, remote display (VRDE), any
network adapter but the one network.py allows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xwvm.worker.drivers.spec import VMSpec
from xwvm.worker.drivers.virtualbox import network
from xwvm.worker.drivers.virtualbox.config import Controller, Drive, MachineSettings

CONTROLLER = Controller("SATA", "SATA", 3)  # AHCI: every VirtualBox guest kernel has it
EXTRA_WORKER, EXTRA_JOB, EXTRA_DIR = "xwvm/worker", "xwvm/job", "xwvm/dir"
EXTRA_STARTED = "xwvm/started"

# (setting as the API names it, the value every VM gets, why)
HARDENING: list[tuple[str, str, str]] = [
    ("IMachine.clipboardMode", "Disabled", "no shared clipboard with the host"),
    ("IMachine.dnDMode", "Disabled", "no drag-and-drop with the host"),
    ("IMachine.sharedFolders", "none", "the guest sees no host folder"),
    ("IMachine.USBControllers", "none", "no USB controller, so no host USB device"),
    ("IUSBDeviceFilters.deviceFilters", "none", "no USB device captured"),
    ("IAudioAdapter.enabled", "false", "no sound device"),
    ("IVRDEServer.enabled", "false", "no remote display listening on the host"),
    ("INetworkAdapter.enabled", "network.py", "no NIC for network=none; never bridged or "
                                              "host-only"),
    ("IMachine.CPUExecutionCap", "spec.cpu_quota_percent", "the job's CPU share"),
    ("IMachine.CPUCount / memorySize", "spec", "the job's caps"),
    ("ISerialPort[0]", "RawFile in the VM folder", "the console, for logs and hang "
                                                   "detection"),
    ("hard disk", "differencing VDI over an immutable template", "the template is never "
                                                                 "written"),
    ("DVD", "context ISO opened read-only", "the guest cannot change its context"),
    ("exchange disk", "every VM, SATA port 2",
     "the guest's verdict; network=none: inputs in, results out"),
]


@dataclass(frozen=True)
class Placement:
    """Where the driver put this VM's files, and the media it opened for it."""

    name: str
    vm_dir: Path
    console: Path
    disk: Any              # the differencing IMedium
    context: Any | None    # the context ISO's IMedium (DVD), if any
    lan_nat: bool = False
    exchange: Any | None = None  # the exchange disk's IMedium (SATA port 2)


Step = Callable[[VMSpec, Placement, MachineSettings], None]


def _identity(spec: VMSpec, p: Placement, s: MachineSettings) -> None:
    s.description = f"xwvm VM of worker {spec.worker_id} for job {spec.job_uid}"
    s.extra_data.update({EXTRA_WORKER: spec.worker_id, EXTRA_JOB: spec.job_uid,
                         EXTRA_DIR: str(p.vm_dir)})


def _caps(spec: VMSpec, p: Placement, s: MachineSettings) -> None:
    s.cpus, s.memory_mb, s.cpu_cap = spec.vcpus, spec.memory_mb, spec.cpu_quota_percent


def _boot(spec: VMSpec, p: Placement, s: MachineSettings) -> None:
    # VirtualBox has no direct kernel boot: the BIOS boots the template's own bootloader.
    s.firmware, s.boot_order = "BIOS", ["HardDisk"]


def _disks(spec: VMSpec, p: Placement, s: MachineSettings) -> None:
    s.controller = CONTROLLER
    s.drives = [Drive(0, "HardDisk", p.disk)]
    if p.context is not None:
        s.drives.append(Drive(1, "DVD", p.context))
    if p.exchange is not None:
        s.drives.append(Drive(2, "HardDisk", p.exchange))


def _console(spec: VMSpec, p: Placement, s: MachineSettings) -> None:
    s.console_file = str(p.console)


def _no_sharing(spec: VMSpec, p: Placement, s: MachineSettings) -> None:
    s.clipboard, s.dnd, s.shared_folders = "Disabled", "Disabled", False


def _no_devices(spec: VMSpec, p: Placement, s: MachineSettings) -> None:
    s.audio, s.vrde, s.usb = False, False, False


def _network(spec: VMSpec, p: Placement, s: MachineSettings) -> None:
    s.nics = network.nics(spec, p.lan_nat)


STEPS: list[Step] = [_identity, _caps, _boot, _disks, _console, _no_sharing, _no_devices,
                     _network]


def settings_for(spec: VMSpec, placement: Placement) -> MachineSettings:
    """The hardened machine for ``spec``: every step of the profile, always all of them."""
    s = MachineSettings(description="", extra_data={}, cpus=0, memory_mb=0, cpu_cap=0)
    for step in STEPS:
        step(spec, placement, s)
    return s
