"""The VirtualBox implementation of the driver contract (xwvm.worker.drivers.base), through
VirtualBox's own Python API (vboxapi): no VBoxManage, no shell scripts.

Machines are registered and named ``xwvm_<worker>_<job>``; their description and extra
data (``xwvm/worker``, ``xwvm/job``, ``xwvm/dir``) say who made them for which job, and
ownership is decided from the extra data, never from names alone. Each VM's files live in
``<work_dir>/xwvm_<worker>_<job>/``: the settings (``.vbox``) and VirtualBox's logs, the
differencing disk (``disk.vdi``), a copy of the context ISO, the console log (COM1 in
RawFile mode). The template stays where the image cache keeps it, opened read-only as an
immutable medium. VirtualBox cannot boot a kernel directly: templates must be bootable
VDI (or VMDK) disks; a spec's kernel/initrd/cmdline are refused when the template has no
boot sector, and otherwise left unused.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from xwvm.worker.drivers.base import (
    ID_RE,
    Driver,
    Network,
    ProbeResult,
    VMSpec,
    VMState,
    wait_for_marker,
)
from xwvm.worker.drivers.errors import (
    DriverError,
    HypervisorUnavailable,
    SpecError,
    Unsupported,
    VMExists,
    VMNotFound,
)
from xwvm.worker.drivers.virtualbox import disk, network, policy
from xwvm.worker.drivers.virtualbox.guest import ACTIVE, Guest
from xwvm.worker.drivers.virtualbox.host import Host

log = logging.getLogger("xwvm.worker.virtualbox")
OS_TYPE = "Linux_64"
PROBE_TIMEOUT_S = 30.0
PROBE_MARKER = "XWVM-PROBE-OK"
# The probe guest, the same boot sector as the libvirt driver's: writes PROBE_MARKER to
# COM1 (port 0x3f8), then halts.
#   xor ax,ax; mov ds,ax; mov si,msg; mov dx,0x3f8
#   l: lodsb; test al,al; jz d; out dx,al; jmp l
#   d: cli; hlt; jmp d
#   msg: db "XWVM-PROBE-OK", 13, 10, 0
_BOOT_CODE = bytes.fromhex("31c08ed8be167cbaf803ac84c07403eeebf8faf4ebfc")
PROBE_SECTOR = (_BOOT_CODE + PROBE_MARKER.encode() + b"\r\n\0").ljust(510, b"\0") + b"\x55\xaa"


class VirtualBoxDriver(Driver):
    name = "virtualbox"
    disk_formats = ("vdi", "vmdk")  # VirtualBox reads the format from the file itself

    def __init__(self, worker_id: str, work_dir: Path, api: Any = None,
                 lan_nat: bool = False) -> None:
        """``api``: the vboxapi module, or a stand-in with the same VirtualBoxManager (the
        tests' fake); None imports vboxapi. ``lan_nat``: allow network=server through
        VirtualBox NAT although it cannot keep the guest off the LAN (network.py)."""
        super().__init__(worker_id, work_dir)
        self.host = Host(api)
        self.lan_nat = lan_nat
        self.prefix = f"xwvm_{worker_id}_"
        self._probe: ProbeResult | None = None

    # -- naming ---------------------------------------------------------------------------

    def _name(self, job_uid: str) -> str:
        if not ID_RE.match(job_uid):
            raise SpecError(f"job_uid must match {ID_RE.pattern}")
        return self.prefix + job_uid

    def _guest(self, job_uid: str) -> Guest | None:
        name = self._name(job_uid)
        try:
            with self.host.translated(f"find machine {name}"):
                machine = self.host.vbox.findMachine(name)
        except VMNotFound:
            return None
        guest = Guest(self.host, machine)
        worker, job, _ = guest.owner()
        if worker != self.worker_id or job != job_uid:
            return None  # same name, not ours: never touch it
        return guest

    def _require(self, job_uid: str) -> Guest:
        guest = self._guest(job_uid)
        if guest is None:
            raise VMNotFound(f"job {job_uid} has no VM of worker {self.worker_id}")
        return guest

    # -- probe ----------------------------------------------------------------------------

    def probe(self, refresh: bool = False) -> ProbeResult:
        """VirtualBox reachable, hardware virtualization present (VirtualBox 7 runs no guest
        without VT-x/AMD-V), and a probe guest printing its marker: accel "hw"."""
        if self._probe is not None and not refresh:
            return self._probe
        try:
            vbox = self.host.vbox
            with self.host.translated("VirtualBox version"):
                version = f"VirtualBox {vbox.version}"
                hw = bool(vbox.host.getProcessorFeature(self.host.c.ProcessorFeature_HWVirtEx))
        except DriverError as e:
            return ProbeResult(False, None, e.message)
        if not hw:
            return ProbeResult(False, None, "no hardware virtualization (VT-x/AMD-V missing, "
                                            "disabled in the firmware, or taken by another "
                                            "hypervisor): VirtualBox 7 needs it", version)
        why = self._boot_probe(PROBE_TIMEOUT_S)
        if why:
            return ProbeResult(False, None, f"the VirtualBox probe guest failed ({why})",
                               version)
        self._probe = ProbeResult(True, "hw", "a probe guest ran under VirtualBox with "
                                              "hardware virtualization (VT-x/AMD-V)", version)
        return self._probe

    def _boot_probe(self, timeout_s: float) -> str:
        """Boot a boot sector that prints PROBE_MARKER on COM1; "" if it did within
        ``timeout_s``, else why not. Always removes what it made."""
        job = "probe-hw"
        vm_dir = self._vm_dir(job)
        self.destroy(job)
        vm_dir.mkdir(parents=True)
        image = vm_dir / "probe-template.vdi"
        disk.write_vdi(image, 1 << 20, PROBE_SECTOR)
        spec = VMSpec(job_uid=job, worker_id=self.worker_id, base_image=image, memory_mb=64)
        try:
            self._create(spec)
            guest = self._require(job)
            guest.start()
            return wait_for_marker(vm_dir / "console.log", [PROBE_MARKER],
                                   lambda: guest.state() in ACTIVE, timeout_s)
        except DriverError as e:
            return e.message
        finally:
            self.destroy(job)

    def _require_usable(self) -> None:
        result = self.probe()
        if not result.usable:
            raise HypervisorUnavailable(f"VirtualBox cannot run VMs here: {result.reason}")

    # -- disks and definition -------------------------------------------------------------

    def _check(self, spec: VMSpec) -> None:
        spec.validate()
        if spec.worker_id != self.worker_id:
            raise SpecError(f"spec is for worker {spec.worker_id}, driver is {self.worker_id}")

    def prepare_disk(self, spec: VMSpec) -> Path:
        self._check(spec)
        if self._guest(spec.job_uid) is not None:
            raise VMExists(f"job {spec.job_uid} already has a VM")
        vm_dir = self._vm_dir(spec.job_uid)
        vm_dir.mkdir(parents=True, exist_ok=True)
        try:
            return self._diff(spec, vm_dir)[1]
        except BaseException:
            self._remove_files(spec.job_uid)
            raise

    def _diff(self, spec: VMSpec, vm_dir: Path) -> tuple[Any, Path]:
        """(the job's differencing IMedium, its path), made if missing."""
        path = vm_dir / "disk.vdi"
        template = disk.open_template(self.host, spec.base_image)
        try:
            size = disk.check_cap(spec.disk_cap_mb, disk.template_size(template, self.host))
        except SpecError:
            disk.release_template(self.host, template)
            raise
        if path.exists():
            with self.host.translated(f"open {path}"):
                for child in template.children:
                    if Path(child.location) == path:
                        return child, path
            raise DriverError(f"{path} exists but is not a child of {spec.base_image}")
        return disk.create_diff(self.host, template, path, size), path

    def define(self, spec: VMSpec) -> None:
        self._check(spec)
        self._require_usable()
        if self._guest(spec.job_uid) is not None:
            raise VMExists(f"job {spec.job_uid} already has a VM")
        self._create(spec)

    def _create(self, spec: VMSpec) -> None:
        network.nics(spec, self.lan_nat)  # refuse what cannot be enforced, before any file
        if spec.kernel is not None and disk.has_boot_sector(spec.base_image) is False:
            raise Unsupported("VirtualBox has no direct kernel boot, and the template has no "
                              "boot sector: VirtualBox templates must be bootable disks")
        vm_dir = self._vm_dir(spec.job_uid)
        name = self._name(spec.job_uid)
        try:
            vm_dir.mkdir(parents=True, exist_ok=True)
            diff, _ = self._diff(spec, vm_dir)
            context = None
            if spec.context_iso is not None:
                # A copy the VM owns: deleted with it (VirtualBox holds the file open).
                iso = vm_dir / "context.iso"
                # 0600 from the start: it holds the job's delegated token
                os.close(os.open(iso, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
                shutil.copyfile(spec.context_iso, iso)
                c = self.host.c
                with self.host.translated(f"open {iso}"):
                    context = self.host.vbox.openMedium(str(iso), c.DeviceType_DVD,
                                                        c.AccessMode_ReadOnly, False)
            exchange = None
            if spec.exchange_disk is not None:
                exchange = disk.open_exchange(self.host, spec.exchange_disk, vm_dir)
            placement = policy.Placement(name=name, vm_dir=vm_dir,
                                         console=vm_dir / "console.log", disk=diff,
                                         context=context, lan_nat=self.lan_nat,
                                         exchange=exchange)
            self._register(spec, placement)
        except BaseException:
            with contextlib.suppress(DriverError):
                self.destroy(spec.job_uid)
            self._remove_files(spec.job_uid)
            raise

    def _register(self, spec: VMSpec, p: policy.Placement) -> None:
        """Create and register the machine, tagged from the first moment (a crash leaves
        a machine that cleanup_leftovers finds), then write the whole profile under a
        Write lock and save it."""
        settings = policy.settings_for(spec, p)
        c = self.host.c
        with self.host.translated(f"create machine {p.name}"):
            machine = self.host.vbox.createMachine(
                str(p.vm_dir / f"{p.name}.vbox"), p.name, c.PlatformArchitecture_x86, [],
                OS_TYPE, "", "", "", "")
            for key, value in settings.extra_data.items():
                machine.setExtraData(key, value)
            self.host.vbox.registerMachine(machine)
        with self.host.session(machine, True, f"configure {p.name}") as session:
            settings.apply(session.machine, c)
            session.machine.saveSettings()

    def machine_settings(self, spec: VMSpec) -> Any:
        """The settings define() would write for ``spec`` (media left unopened)."""
        vm_dir = self._vm_dir(spec.job_uid)
        return policy.settings_for(spec, policy.Placement(
            self._name(spec.job_uid), vm_dir, vm_dir / "console.log", None, None,
            self.lan_nat))

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, job_uid: str) -> None:
        self._require(job_uid).start()

    def state(self, job_uid: str) -> VMState:
        guest = self._guest(job_uid)
        return VMState.MISSING if guest is None else guest.state()

    def stop(self, job_uid: str, grace_s: float = 30.0) -> VMState:
        guest = self._guest(job_uid)
        if guest is None:
            return VMState.MISSING
        if guest.state() in ACTIVE:
            if grace_s > 0:
                # The guest may have powered off meanwhile; power_off settles it.
                with contextlib.suppress(DriverError):
                    guest.power_button()
                guest.wait_inactive(grace_s)
            guest.power_off()
        return guest.state()

    def destroy(self, job_uid: str) -> None:
        guest = self._guest(job_uid)
        if guest is not None:
            templates = guest.templates()
            guest.power_off()
            guest.remove()
            for template in templates:
                disk.release_template(self.host, template)
        self._remove_files(job_uid)

    def _remove_files(self, job_uid: str) -> None:
        """The VM folder, and any medium VirtualBox still has registered inside it."""
        vm_dir = self._vm_dir(job_uid)
        if self.host._vbox is not None:
            disk.forget_under(self.host, vm_dir)
        shutil.rmtree(vm_dir, ignore_errors=True)

    def list_own(self) -> list[str]:
        with self.host.translated("list machines"):
            machines = list(self.host.vbox.machines)
        jobs = []
        for machine in machines:
            try:
                guest = Guest(self.host, machine)
                worker, job, _ = guest.owner()
            except DriverError:
                continue  # inaccessible, or unregistered meanwhile
            if worker == self.worker_id and guest.name == self.prefix + job and job:
                jobs.append(job)
        return sorted(jobs)

    def guest_endpoint(self, spec: VMSpec) -> tuple[str, int] | None:
        return network.guest_endpoint(spec)

    def networks(self) -> tuple[Network, ...]:
        return network.enforced(self.lan_nat)

    def close(self) -> None:
        self.host.close()
