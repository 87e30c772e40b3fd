"""The libvirt/QEMU implementation of the driver contract (xwvm.worker.drivers.base).

Domains are persistent (defineXML + create) and named ``xwvm_<worker>_<job>``: after the
guest powers off, the domain stays defined with libvirt's shutoff reason, so state()
tells a clean poweroff (SHUTOFF) from a QEMU that died (CRASHED), and a restarted
worker finds VMs that ended while it was down. destroy() undefines. Each VM's files live
in ``<work_dir>/xwvm_<worker>_<job>/`` (overlay, context ISO copy, console log); the
domain's ``<metadata>`` records worker, job and that folder. Ownership is decided from
the metadata, never from names alone. What every backend shares is in base.py; this
module has libvirt's primitives only.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from xwvm.protocol.messages import HypervisorProbe
from xwvm.protocol.vocab import NetworkPolicy
from xwvm.worker.drivers.base import Driver, VMSpec, unusable, usable
from xwvm.worker.drivers.errors import DriverError, Unsupported
from xwvm.worker.drivers.libvirt import disk, network, policy
from xwvm.worker.drivers.libvirt.guest import Guest
from xwvm.worker.drivers.libvirt.host import Host
from xwvm.worker.drivers.probe import PROBE_MARKER, PROBE_SECTOR
from xwvm.worker.drivers.spec import disk_size
from xwvm.worker.forwarder import Forwarder

KVM_PROBE_TIMEOUT_S = 10.0  # a kernel reaches its root-fs panic in ~1 s under working KVM
TCG_PROBE_TIMEOUT_S = 60.0
PROBE_KERNEL_MARKERS = ("Unable to mount root fs", "Kernel panic")

# Probe results per hypervisor URI, for the life of the worker process.
_PROBES: dict[str, HypervisorProbe] = {}


def _not_searchable(path: Path) -> Path | None:
    """The first folder on the way to ``path`` that other users cannot traverse."""
    for folder in [*reversed(path.parents), path]:
        try:
            if not folder.stat().st_mode & 0o001:
                return folder
        except FileNotFoundError:
            return None
    return None


class LibvirtDriver(Driver):
    name = "libvirt"
    label = "libvirt"
    server_refusal = network.NO_SOCAT
    disk_formats = ("qcow2", "raw")

    def __init__(self, worker_id: str, work_dir: Path, uri: str = "qemu:///system",
                 probe_kernel: Path | None = None, reconnect_s: float | None = None) -> None:
        """``reconnect_s``: how long a call waits out a libvirtd restart (None: the
        default of xwvm.worker.drivers.reconnect, or $XWVM_HYPERVISOR_RECONNECT_S)."""
        super().__init__(worker_id, work_dir)
        self.host = Host(uri, reconnect_s)
        self.probe_kernel = probe_kernel or _default_probe_kernel()
        self.socat = shutil.which("socat")
        # network=server: each VM's connections to the server go through its own capped
        # forwarder in this process (xwvm.worker.forwarder), from define() to destroy().
        self._forwarders: dict[str, Forwarder] = {}

    # -- probe ----------------------------------------------------------------------------

    def probe(self, refresh: bool = False) -> HypervisorProbe:
        blocked = _not_searchable(self.work_dir)
        if blocked is not None:  # checked first: the probe cache is per URI, not per dir
            return unusable(
                f"QEMU runs as an unprivileged user and cannot reach {self.work_dir}: "
                f"{blocked} is not searchable by others (chmod o+x {blocked}, or use a work "
                "dir such as /var/lib/xwvm-worker)")
        if not refresh and self.host.uri in _PROBES:
            return _PROBES[self.host.uri]
        try:
            version = self.host.version()
            types = self.host.domain_types()
        except DriverError as e:
            return unusable(f"libvirt unreachable: {e.message}")
        result = self._probe_accels(types, version)
        if result.usable:
            _PROBES[self.host.uri] = result
        return result

    def _probe_accels(self, types: set[str], version: str) -> HypervisorProbe:
        """KVM if a probe kernel boots under it, else TCG if the probe guest runs."""
        if "kvm" not in types:
            no_kvm = "libvirt offers no KVM (no /dev/kvm, or the QEMU user cannot open it)"
        elif self.probe_kernel is None:
            # A boot sector runs fine under a broken nested KVM that hangs every Linux
            # kernel (seen on our CI machines): only a kernel's boot is evidence enough.
            no_kvm = ("KVM offered but not tried: no probe kernel "
                      "(XWVM_PROBE_KERNEL, or a readable /boot/vmlinuz)")
        else:
            why = self._boot_probe("kvm", KVM_PROBE_TIMEOUT_S, self._probe_markers())
            if not why:
                return usable("kvm", "a probe kernel booted under KVM", version)
            no_kvm = f"KVM offered but a probe kernel failed under it ({why})"
        if "qemu" not in types:
            return unusable(f"{no_kvm}; libvirt offers no TCG either", version)
        why = self._boot_probe("tcg", TCG_PROBE_TIMEOUT_S, self._probe_markers())
        if why:
            return unusable(f"{no_kvm}; TCG probe guest failed ({why})", version)
        return usable("tcg", f"software emulation: {no_kvm}", version)

    def _probe_markers(self) -> tuple[str, ...]:
        return PROBE_KERNEL_MARKERS if self.probe_kernel is not None else (PROBE_MARKER,)

    def _probe_spec(self, job: str, vm_dir: Path) -> VMSpec:
        """With a probe kernel: the kernel, no initrd, until it panics for want of a root
        file system (it ran all of its initialisation). Without: the probe boot sector
        (proves the hypervisor, the XML and the console)."""
        image = vm_dir / "probe.img"
        with image.open("wb") as f:
            f.write(PROBE_SECTOR)
            f.truncate(1 << 20)  # SeaBIOS skips a virtio disk of a single sector
        image.chmod(0o644)
        boot: dict[str, object] = {}
        if self.probe_kernel is not None:
            kernel = vm_dir / "vmlinuz"
            shutil.copyfile(self.probe_kernel, kernel)  # libvirt relabels its copy only
            kernel.chmod(0o644)
            boot = {"kernel": kernel, "cmdline": "console=ttyS0 panic=-1 xwvm_probe=1"}
        return VMSpec(job_uid=job, worker_id=self.worker_id, base_image=image,
                      base_format="raw", memory_mb=self.probe_memory_mb,
                      **boot)  # type: ignore[arg-type]

    def _launch_probe(self, spec: VMSpec, vm_dir: Path, accel: str) -> Guest:
        """A transient domain: it disappears when powered off."""
        self._make_disk(spec, vm_dir)
        return Guest(self.host, self.host.create_transient(self.domain_xml(spec, accel)))

    # -- disks and definition -------------------------------------------------------------

    def _make_disk(self, spec: VMSpec, vm_dir: Path) -> Path:
        overlay = vm_dir / "disk.qcow2"
        if overlay.exists():
            return overlay
        size = disk_size(spec, disk.virtual_size(spec.base_image, spec.base_format))
        disk.create_overlay(spec.base_image, spec.base_format, overlay, size)
        overlay.chmod(0o600)  # the guest's writes: nobody else's to read (libvirt chowns it)
        return overlay

    def _create(self, spec: VMSpec, vm_dir: Path, accel: str) -> None:
        self._make_disk(spec, vm_dir)
        # libvirt's DAC labelling chowns the ISO copy to the QEMU user while the VM runs.
        self._copy_context(spec, vm_dir)
        xml = self.domain_xml(spec, accel)
        self._start_forwarder(spec, vm_dir)
        self.host.define(xml)

    def _placement(self, spec: VMSpec, accel: str, vm_dir: Path,
                   context_iso: Path | None) -> policy.Placement:
        return policy.Placement(name=self._name(spec.job_uid), accel=accel, vm_dir=vm_dir,
                                overlay=vm_dir / "disk.qcow2", console=vm_dir / "console.log",
                                context_iso=context_iso, socat=self.socat,
                                forward_socket=vm_dir / "server.sock")

    def domain_xml(self, spec: VMSpec, accel: str = "tcg") -> str:
        """The domain XML of ``spec``'s VM under ``accel``, as define() (and the probe)
        hand it to libvirt; it makes no file and asks libvirt nothing.

        Public on purpose, beside the worker's interface: the golden tests pin define()'s
        XML through it, and the start benchmark boots it as its floor."""
        spec.validate()
        vm_dir = self._vm_dir(spec.job_uid)
        iso = vm_dir / "context.iso" if spec.context_iso is not None else None
        return policy.domain_for(spec, self._placement(spec, accel, vm_dir, iso)).to_xml()

    # -- the network=server forwarder -----------------------------------------------------

    def _start_forwarder(self, spec: VMSpec, vm_dir: Path) -> None:
        if spec.network == NetworkPolicy.NONE or spec.server_endpoint is None:
            return
        self._release(spec.job_uid)
        try:
            fwd = Forwarder(vm_dir / "server.sock", spec.server_endpoint)
        except ValueError as e:
            raise Unsupported(f"network=server: {e} (use a shorter --work-dir)") from None
        self._forwarders[spec.job_uid] = fwd.start()

    def _release(self, job_uid: str) -> None:
        fwd = self._forwarders.pop(job_uid, None)
        if fwd is not None:
            fwd.stop()

    def start(self, job_uid: str) -> None:
        super().start(job_uid)
        fwd = self._forwarders.get(job_uid)
        if fwd is not None:
            # QEMU runs as the user libvirt relabelled the overlay to (libvirt-qemu under
            # qemu:///system, this worker's own under qemu:///session): only it may connect.
            fwd.allow((self._vm_dir(job_uid) / "disk.qcow2").stat().st_uid)

    # -- the rest of the contract ---------------------------------------------------------

    def _lookup(self, name: str) -> Guest | None:
        dom = self.host.lookup(name)
        return None if dom is None else Guest(self.host, dom)

    def _guests(self) -> Iterable[Guest]:
        return [Guest(self.host, dom) for dom in self.host.domains(self.prefix)]

    def _server_address(self, server: tuple[str, int]) -> tuple[str, int]:
        return network.guest_address(server)

    def networks(self) -> tuple[NetworkPolicy, ...]:
        return network.enforced(self.socat)

    def close(self) -> None:
        self.host.close()


def _default_probe_kernel() -> Path | None:
    """A Linux kernel to self-test with: $XWVM_PROBE_KERNEL, else the host's own."""
    env = os.environ.get("XWVM_PROBE_KERNEL")
    candidates = [Path(env)] if env else sorted(Path("/boot").glob("vmlinuz-*"))[-1:]
    for path in candidates:
        if path.is_file() and os.access(path, os.R_OK):
            return path
    return None
