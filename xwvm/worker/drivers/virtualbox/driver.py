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
boot sector, and otherwise left unused. What every backend shares is in base.py; this
module has VirtualBox's primitives only.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from xwvm.protocol.messages import HypervisorProbe
from xwvm.protocol.vocab import NetworkPolicy
from xwvm.worker.drivers.base import Driver, VMSpec, unusable, usable
from xwvm.worker.drivers.errors import (
    ConnectionLost,
    DriverError,
    SpecError,
    Unsupported,
    VMNotFound,
)
from xwvm.worker.drivers.probe import PROBE_SECTOR
from xwvm.worker.drivers.spec import disk_size
from xwvm.worker.drivers.virtualbox import disk, network, policy
from xwvm.worker.drivers.virtualbox.guest import Guest
from xwvm.worker.drivers.virtualbox.host import Host

OS_TYPE = "Linux_64"
PROBE_TIMEOUT_S = 30.0


class VirtualBoxDriver(Driver):
    name = "virtualbox"
    label = "VirtualBox"
    server_refusal = network.NAT_REACHES_LAN
    disk_formats = ("vdi", "vmdk")  # VirtualBox reads the format from the file itself
    probe_memory_mb = 64

    def __init__(self, worker_id: str, work_dir: Path, api: Any = None,
                 lan_nat: bool = False, reconnect_s: float | None = None) -> None:
        """``api``: the vboxapi module, or a stand-in with the same VirtualBoxManager (the
        tests' fake); None imports vboxapi. ``lan_nat``: allow network=server through
        VirtualBox NAT although it cannot keep the guest off the LAN (network.py).
        ``reconnect_s``: how long a call waits out a VBoxSVC restart (None: the default
        of xwvm.worker.drivers.reconnect, or $XWVM_HYPERVISOR_RECONNECT_S)."""
        super().__init__(worker_id, work_dir)
        self.host = Host(api, reconnect_s)
        self.lan_nat = lan_nat
        self._probe: HypervisorProbe | None = None

    # -- probe ----------------------------------------------------------------------------

    def probe(self, refresh: bool = False) -> HypervisorProbe:
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
            return unusable(e.message)
        if not hw:
            return unusable("no hardware virtualization (VT-x/AMD-V missing, disabled in the "
                            "firmware, or taken by another hypervisor): VirtualBox 7 needs it",
                            version)
        why = self._boot_probe("hw", PROBE_TIMEOUT_S)
        if why:
            return unusable(f"the VirtualBox probe guest failed ({why})", version)
        self._probe = usable("hw", "a probe guest ran under VirtualBox with hardware "
                                   "virtualization (VT-x/AMD-V)", version)
        return self._probe

    def _probe_spec(self, job: str, vm_dir: Path) -> VMSpec:
        image = vm_dir / "probe-template.vdi"
        disk.write_vdi(image, 1 << 20, PROBE_SECTOR)
        return VMSpec(job_uid=job, worker_id=self.worker_id, base_image=image,
                      base_format="vdi", memory_mb=self.probe_memory_mb)

    def _launch_probe(self, spec: VMSpec, vm_dir: Path, accel: str) -> Guest:
        self._create(spec, vm_dir, accel)
        guest = self._require(spec.job_uid)
        guest.start()
        return guest

    # -- disks and definition -------------------------------------------------------------

    def _refuse(self, spec: VMSpec) -> None:
        super()._refuse(spec)
        network.nics(spec, self.lan_nat)  # what only VirtualBox refuses (a loopback server)
        if spec.kernel is not None and disk.has_boot_sector(spec.base_image) is False:
            raise Unsupported("VirtualBox has no direct kernel boot, and the template has no "
                              "boot sector: VirtualBox templates must be bootable disks")

    def _make_disk(self, spec: VMSpec, vm_dir: Path) -> Path:
        return self._diff(spec, vm_dir)[1]

    def _diff(self, spec: VMSpec, vm_dir: Path) -> tuple[Any, Path]:
        """(the job's differencing IMedium, its path), made if missing."""
        path = vm_dir / "disk.vdi"
        template = disk.open_template(self.host, spec.base_image)
        try:
            size = disk_size(spec, disk.template_size(template, self.host))
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

    def _create(self, spec: VMSpec, vm_dir: Path, accel: str) -> None:
        diff, _ = self._diff(spec, vm_dir)
        context = None
        iso = self._copy_context(spec, vm_dir)  # VirtualBox holds the file open
        if iso is not None:
            c = self.host.c
            with self.host.translated(f"open {iso}"):
                context = self.host.vbox.openMedium(str(iso), c.DeviceType_DVD,
                                                    c.AccessMode_ReadOnly, False)
        exchange = None
        if spec.exchange_disk is not None:
            exchange = disk.open_exchange(self.host, spec.exchange_disk, vm_dir)
        placement = policy.Placement(name=self._name(spec.job_uid), vm_dir=vm_dir,
                                     console=vm_dir / "console.log", disk=diff,
                                     context=context, lan_nat=self.lan_nat,
                                     exchange=exchange)
        self._register(spec, placement)

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

    # -- the rest of the contract ---------------------------------------------------------

    def _lookup(self, name: str) -> Guest | None:
        try:
            return self.host.run(f"find machine {name}", lambda: Guest(
                self.host, self.host.vbox.findMachine(name)))
        except VMNotFound:
            return None

    def _guests(self) -> Iterator[Guest]:
        yield from self.host.run("list machines", self._wrap_machines)

    def _wrap_machines(self) -> list[Guest]:
        guests = []
        for machine in list(self.host.vbox.machines):
            try:
                guests.append(Guest(self.host, machine))
            except ConnectionLost:
                raise
            except DriverError:
                continue  # inaccessible, or unregistered meanwhile
        return guests

    def _remove_folder(self, folder: Path) -> None:
        """The VM folder, and any medium VirtualBox still has registered inside it."""
        if self.host._mgr is not None:  # connected once (maybe to a VBoxSVC since gone)
            disk.forget_under(self.host, folder)
        super()._remove_folder(folder)

    def _server_address(self, server: tuple[str, int]) -> tuple[str, int]:
        return server  # through NAT, at its own address

    def networks(self) -> tuple[NetworkPolicy, ...]:
        return network.enforced(self.lan_nat)

    def close(self) -> None:
        self.host.close()
