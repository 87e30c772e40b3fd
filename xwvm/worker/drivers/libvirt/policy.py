"""The hardening profile: turns every VMSpec into the one domain shape xwvm allows.

A flat list of small steps, each owning one concern, applied to every VM (and to the
probe guest). config.py only writes what is decided here.

What a VM gets: ACPI, vCPU and memory caps, a per-vCPU CPU quota, the overlay disk
(virtio) on a template libvirt never relabels, the job's exchange disk (raw, virtio: the
guest's verdict, and a network=none job's inputs and results), the context ISO as a read-only SCSI
CD-ROM, the serial console to a file, destroy on poweroff/reboot/crash, QEMU's seccomp
sandbox, and the network of network.py. What it never gets: graphics, video, sound,
USB, a memory balloon, shared folders, host devices, channels, a default NIC (libvirt
runs QEMU with -nodefaults, so a device is there only if listed here).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from xwvm.worker.drivers.libvirt import network
from xwvm.worker.drivers.libvirt.config import (
    BackingStore,
    Controller,
    CPUTune,
    Disk,
    DomainConfig,
    OSBoot,
    OwnerTag,
    SerialFile,
)
from xwvm.worker.drivers.spec import VMSpec

CPU_PERIOD_US = 100_000
MACHINE = "pc"  # i440fx: fewest built-in devices; the Debian cloud kernel has no AHCI driver
# QEMU's seccomp filter, as libvirt sets it, and with spawn allowed for guestfwd's helper
# (QEMU's "elevateprivileges" set includes setsid, which the spawned child calls; QEMU
# runs as the unprivileged libvirt-qemu user either way). Only network=server VMs get
# SANDBOX_SPAWN: guestfwd has no form that serves several connections without a command.
SANDBOX_STRICT = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"
SANDBOX_SPAWN = "on,obsolete=deny,elevateprivileges=allow,spawn=allow,resourcecontrol=deny"
# Drop libvirt's own -sandbox (it would add spawn=deny, or "off") so that ours is the one.
SANDBOX_CAPS_DEL = ["seccomp-sandbox", "seccomp-blacklist"]


@dataclass(frozen=True)
class Placement:
    """Where the driver put this VM's files, and how it runs."""

    name: str
    accel: str  # "kvm" | "tcg"
    vm_dir: Path
    overlay: Path
    console: Path
    context_iso: Path | None
    socat: str | None
    forward_socket: Path | None = None  # network=server: the VM's forwarder (worker side)


Step = Callable[[VMSpec, Placement, DomainConfig], None]


def _lifecycle(spec: VMSpec, p: Placement, dom: DomainConfig) -> None:
    # Poweroff ends the job; a reboot or crash ends it too (nothing restarts by itself).
    dom.on_poweroff = dom.on_reboot = dom.on_crash = "destroy"
    dom.acpi = True
    dom.owner = OwnerTag(spec.worker_id, spec.job_uid, str(p.vm_dir))


def _caps(spec: VMSpec, p: Placement, dom: DomainConfig) -> None:
    dom.vcpus = spec.vcpus
    dom.memory_mib = spec.memory_mb
    dom.cputune = CPUTune(CPU_PERIOD_US, CPU_PERIOD_US * spec.cpu_quota_percent // 100)
    # Guests see a modern CPU: the host's under KVM; QEMU's "max" (all it emulates, AVX2
    # included) under TCG, since software such as ROOT's JIT assumes more than qemu64.
    dom.cpu_mode = "host-passthrough" if p.accel == "kvm" else "maximum"


def _boot(spec: VMSpec, p: Placement, dom: DomainConfig) -> None:
    if spec.kernel is not None:
        dom.os = OSBoot(machine=MACHINE, kernel=str(spec.kernel),
                        initrd=str(spec.initrd) if spec.initrd else None, cmdline=spec.cmdline)
    else:
        dom.os = OSBoot(machine=MACHINE, boot_dev="hd")


def _disks(spec: VMSpec, p: Placement, dom: DomainConfig) -> None:
    dom.disks.append(Disk("disk", str(p.overlay), "qcow2", "vda", "virtio",
                          backing=BackingStore(str(spec.base_image), spec.base_format,
                                               relabel=False)))
    if spec.exchange_disk is not None:  # the verdict (and network=none files) (vdb)
        dom.disks.append(Disk("disk", str(spec.exchange_disk), "raw", "vdb", "virtio"))
    if p.context_iso is not None:
        # SCSI, not SATA/IDE: Debian's cloud kernel has virtio_scsi + sr_mod, no AHCI.
        dom.controllers.append(Controller("scsi", "virtio-scsi"))
        dom.disks.append(Disk("cdrom", str(p.context_iso), "raw", "sda", "scsi",
                              readonly=True))


def _console(spec: VMSpec, p: Placement, dom: DomainConfig) -> None:
    dom.serials.append(SerialFile(str(p.console)))


def _no_extras(spec: VMSpec, p: Placement, dom: DomainConfig) -> None:
    dom.controllers.append(Controller("usb", "none"))
    dom.memballoon = "none"


def _sandbox(spec: VMSpec, p: Placement, dom: DomainConfig) -> None:
    dom.qemu_caps_del = list(SANDBOX_CAPS_DEL)
    sandbox = SANDBOX_SPAWN if network.needs_spawn(spec) else SANDBOX_STRICT
    dom.qemu_args += ["-sandbox", sandbox]


def _network(spec: VMSpec, p: Placement, dom: DomainConfig) -> None:
    dom.qemu_args += network.qemu_args(spec, p.socat, p.forward_socket)


STEPS: list[Step] = [_lifecycle, _caps, _boot, _disks, _console, _no_extras, _network, _sandbox]


def domain_for(spec: VMSpec, placement: Placement) -> DomainConfig:
    """The hardened domain for ``spec``: every step of the profile, always all of them."""
    dom = DomainConfig(name=placement.name, type="kvm" if placement.accel == "kvm" else "qemu",
                       memory_mib=0, vcpus=0, os=OSBoot())
    for step in STEPS:
        step(spec, placement, dom)
    return dom
