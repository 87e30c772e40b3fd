"""The libvirt/QEMU implementation of the driver contract (xwvm.worker.drivers.base).

Domains are persistent (defineXML + create) and named ``xwvm_<worker>_<job>``: after the
guest powers off, the domain stays defined with libvirt's shutoff reason, so state()
tells a clean poweroff (SHUTOFF) from a QEMU that died (CRASHED), and a restarted
worker finds VMs that ended while it was down. destroy() undefines. Each VM's files live
in ``<work_dir>/xwvm_<worker>_<job>/`` (overlay, context ISO copy, console log); the
domain's ``<metadata>`` records worker, job and that folder. Ownership is decided from
the metadata, never from names alone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

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
from xwvm.worker.drivers.libvirt import disk, network, policy
from xwvm.worker.drivers.libvirt.guest import Guest
from xwvm.worker.drivers.libvirt.host import Host
from xwvm.worker.forwarder import Forwarder

KVM_PROBE_TIMEOUT_S = 10.0  # a kernel reaches its root-fs panic in ~1 s under working KVM
TCG_PROBE_TIMEOUT_S = 60.0
PROBE_KERNEL_MARKERS = ("Unable to mount root fs", "Kernel panic")
PROBE_MARKER = "XWVM-PROBE-OK"
# The probe guest: a boot sector that writes PROBE_MARKER to COM1 (port 0x3f8), then halts.
#   xor ax,ax; mov ds,ax; mov si,msg; mov dx,0x3f8
#   l: lodsb; test al,al; jz d; out dx,al; jmp l
#   d: cli; hlt; jmp d
#   msg: db "XWVM-PROBE-OK", 13, 10, 0
_BOOT_CODE = bytes.fromhex("31c08ed8be167cbaf803ac84c07403eeebf8faf4ebfc")
PROBE_SECTOR = (_BOOT_CODE + PROBE_MARKER.encode() + b"\r\n\0").ljust(510, b"\0") + b"\x55\xaa"

# Probe results per hypervisor URI, for the life of the worker process.
_PROBES: dict[str, ProbeResult] = {}


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
    disk_formats = ("qcow2", "raw")

    def __init__(self, worker_id: str, work_dir: Path, uri: str = "qemu:///system",
                 probe_kernel: Path | None = None) -> None:
        super().__init__(worker_id, work_dir)
        self.host = Host(uri)
        self.probe_kernel = probe_kernel or _default_probe_kernel()
        self.prefix = f"xwvm_{worker_id}_"
        self.socat = shutil.which("socat")
        # network=server: each VM's connections to the server go through its own capped
        # forwarder in this process (xwvm.worker.forwarder), from define() to destroy().
        self._forwarders: dict[str, Forwarder] = {}

    # -- naming ---------------------------------------------------------------------------

    def _name(self, job_uid: str) -> str:
        if not ID_RE.match(job_uid):
            raise SpecError(f"job_uid must match {ID_RE.pattern}")
        return self.prefix + job_uid

    def _guest(self, job_uid: str) -> Guest | None:
        dom = self.host.lookup(self._name(job_uid))
        if dom is None:
            return None
        guest = Guest(dom)
        owner = guest.owner()
        if owner is None or owner.worker_id != self.worker_id or owner.job_uid != job_uid:
            return None  # same name, not ours: never touch it
        return guest

    # -- probe ----------------------------------------------------------------------------

    def probe(self, refresh: bool = False) -> ProbeResult:
        blocked = _not_searchable(self.work_dir)
        if blocked is not None:  # checked first: the probe cache is per URI, not per dir
            return ProbeResult(False, None, (
                f"QEMU runs as an unprivileged user and cannot reach {self.work_dir}: "
                f"{blocked} is not searchable by others (chmod o+x {blocked}, or use a work "
                "dir such as /var/lib/xwvm-worker)"))
        if not refresh and self.host.uri in _PROBES:
            return _PROBES[self.host.uri]
        try:
            version = self.host.version()
            types = self.host.domain_types()
        except DriverError as e:
            return ProbeResult(False, None, f"libvirt unreachable: {e.message}")
        if "kvm" not in types:
            no_kvm = "libvirt offers no KVM (no /dev/kvm, or the QEMU user cannot open it)"
        elif self.probe_kernel is None:
            # A boot sector runs fine under a broken nested KVM that hangs every Linux
            # kernel (seen on our CI machines): only a kernel's boot is evidence enough.
            no_kvm = ("KVM offered but not tried: no probe kernel "
                      "(XWVM_PROBE_KERNEL, or a readable /boot/vmlinuz)")
        else:
            why = self._boot_probe("kvm", KVM_PROBE_TIMEOUT_S)
            if not why:
                result = ProbeResult(True, "kvm", "a probe kernel booted under KVM", version)
                _PROBES[self.host.uri] = result
                return result
            no_kvm = f"KVM offered but a probe kernel failed under it ({why})"
        if "qemu" not in types:
            return ProbeResult(False, None, f"{no_kvm}; libvirt offers no TCG either", version)
        why = self._boot_probe("tcg", TCG_PROBE_TIMEOUT_S)
        if why:
            return ProbeResult(False, None, f"{no_kvm}; TCG probe guest failed ({why})",
                               version)
        result = ProbeResult(True, "tcg", f"software emulation: {no_kvm}", version)
        _PROBES[self.host.uri] = result
        return result

    def _boot_probe(self, accel: str, timeout_s: float) -> str:
        """Boot the probe guest under ``accel`` (transient domain); "" if it got far enough
        within ``timeout_s``, else why not. Always removes what it made.

        With a probe kernel: the kernel, no initrd, until it panics for want of a root
        file system (it ran all of its initialisation). Without: a boot sector that
        prints PROBE_MARKER on COM1 (proves the hypervisor, the XML and the console).
        """
        job = f"probe-{accel}"
        vm_dir = self._vm_dir(job)
        shutil.rmtree(vm_dir, ignore_errors=True)
        self._make_vm_dir(vm_dir)
        image = vm_dir / "probe.img"
        with image.open("wb") as f:
            f.write(PROBE_SECTOR)
            f.truncate(1 << 20)  # SeaBIOS skips a virtio disk of a single sector
        image.chmod(0o644)
        boot: dict[str, object] = {}
        markers = (PROBE_MARKER,)
        if self.probe_kernel is not None:
            kernel = vm_dir / "vmlinuz"
            shutil.copyfile(self.probe_kernel, kernel)  # libvirt relabels its copy only
            kernel.chmod(0o644)
            boot = {"kernel": kernel, "cmdline": "console=ttyS0 panic=-1 xwvm_probe=1"}
            markers = PROBE_KERNEL_MARKERS
        spec = VMSpec(job_uid=job, worker_id=self.worker_id, base_image=image,
                      base_format="raw", memory_mb=128, **boot)  # type: ignore[arg-type]
        guest = None
        try:
            self._overlay(spec, vm_dir)
            dom = policy.domain_for(spec, self._placement(spec, accel, vm_dir, None))
            guest = Guest(self.host.create_transient(dom.to_xml()))
            return wait_for_marker(vm_dir / "console.log", markers, guest.is_active,
                                   timeout_s)
        except DriverError as e:
            return e.message
        finally:
            if guest is not None:
                guest.power_off()
            shutil.rmtree(vm_dir, ignore_errors=True)

    def _accel(self) -> str:
        result = self.probe()
        if not result.usable or result.accel is None:
            raise HypervisorUnavailable(f"libvirt cannot run VMs here: {result.reason}")
        return result.accel

    # -- disks and definition -------------------------------------------------------------

    def _make_vm_dir(self, vm_dir: Path) -> None:
        vm_dir.mkdir(parents=True, exist_ok=True)
        # QEMU runs as an unprivileged user (libvirt-qemu): it must traverse this folder
        # (libvirt hands it each file, relabelled), but needs no listing.
        vm_dir.chmod(0o711)

    def _placement(self, spec: VMSpec, accel: str, vm_dir: Path,
                   context_iso: Path | None) -> policy.Placement:
        return policy.Placement(name=self._name(spec.job_uid), accel=accel, vm_dir=vm_dir,
                                overlay=vm_dir / "disk.qcow2", console=vm_dir / "console.log",
                                context_iso=context_iso, socat=self.socat,
                                forward_socket=vm_dir / "server.sock")

    def _start_forwarder(self, spec: VMSpec, vm_dir: Path) -> None:
        if spec.network == Network.NONE or spec.server_endpoint is None:
            return
        self._stop_forwarder(spec.job_uid)
        try:
            fwd = Forwarder(vm_dir / "server.sock", spec.server_endpoint)
        except ValueError as e:
            raise Unsupported(f"network=server: {e} (use a shorter --work-dir)") from None
        self._forwarders[spec.job_uid] = fwd.start()

    def _stop_forwarder(self, job_uid: str) -> None:
        fwd = self._forwarders.pop(job_uid, None)
        if fwd is not None:
            fwd.stop()

    def _overlay(self, spec: VMSpec, vm_dir: Path) -> Path:
        size = disk.virtual_size(spec.base_image, spec.base_format)
        cap = spec.disk_cap_mb * 1024 * 1024
        if cap and cap < size:
            raise SpecError(f"disk_cap_mb {spec.disk_cap_mb} is smaller than the template "
                            f"({size // (1024 * 1024)} MiB)")
        overlay = vm_dir / "disk.qcow2"
        disk.create_overlay(spec.base_image, spec.base_format, overlay, cap or size)
        overlay.chmod(0o600)  # the guest's writes: nobody else's to read (libvirt chowns it)
        return overlay

    def prepare_disk(self, spec: VMSpec) -> Path:
        spec.validate()
        self._check_worker(spec)
        if self._guest(spec.job_uid) is not None:
            raise VMExists(f"job {spec.job_uid} already has a VM")
        vm_dir = self._vm_dir(spec.job_uid)
        self._make_vm_dir(vm_dir)
        try:
            return self._overlay(spec, vm_dir)
        except BaseException:
            shutil.rmtree(vm_dir, ignore_errors=True)
            raise

    def _check_worker(self, spec: VMSpec) -> None:
        if spec.worker_id != self.worker_id:
            raise SpecError(f"spec is for worker {spec.worker_id}, driver is {self.worker_id}")
        if spec.base_format not in self.disk_formats:
            raise Unsupported(f"the libvirt driver boots {' or '.join(self.disk_formats)} "
                              f"templates, not {spec.base_format}")

    def define(self, spec: VMSpec) -> None:
        spec.validate()
        self._check_worker(spec)
        accel = self._accel()
        vm_dir = self._vm_dir(spec.job_uid)
        if self._guest(spec.job_uid) is not None:
            raise VMExists(f"job {spec.job_uid} already has a VM")
        try:
            if not (vm_dir / "disk.qcow2").exists():
                self.prepare_disk(spec)
            iso = None
            if spec.context_iso is not None:
                # A copy the VM owns: libvirt relabels it, and destroy() removes it.
                iso = vm_dir / "context.iso"
                # 0600 from the start: it holds the job's delegated token. libvirt's DAC
                # labelling chowns it to the QEMU user while the VM runs.
                os.close(os.open(iso, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
                shutil.copyfile(spec.context_iso, iso)
            dom = policy.domain_for(spec, self._placement(spec, accel, vm_dir, iso))
            self._start_forwarder(spec, vm_dir)
            self.host.define(dom.to_xml())
        except BaseException:
            self._stop_forwarder(spec.job_uid)
            shutil.rmtree(vm_dir, ignore_errors=True)
            raise

    def domain_xml(self, spec: VMSpec, accel: str = "tcg") -> str:
        """The domain XML define() would use (for golden tests and benchmarks)."""
        spec.validate()
        vm_dir = self._vm_dir(spec.job_uid)
        iso = vm_dir / "context.iso" if spec.context_iso is not None else None
        return policy.domain_for(spec, self._placement(spec, accel, vm_dir, iso)).to_xml()

    # -- lifecycle ------------------------------------------------------------------------

    def _require(self, job_uid: str) -> Guest:
        guest = self._guest(job_uid)
        if guest is None:
            raise VMNotFound(f"job {job_uid} has no VM of worker {self.worker_id}")
        return guest

    def start(self, job_uid: str) -> None:
        self._require(job_uid).start()
        fwd = self._forwarders.get(job_uid)
        if fwd is not None:
            # QEMU runs as the user libvirt relabelled the overlay to (libvirt-qemu under
            # qemu:///system, this worker's own under qemu:///session): only it may connect.
            fwd.allow((self._vm_dir(job_uid) / "disk.qcow2").stat().st_uid)

    def state(self, job_uid: str) -> VMState:
        guest = self._guest(job_uid)
        return VMState.MISSING if guest is None else guest.state()

    def stop(self, job_uid: str, grace_s: float = 30.0) -> VMState:
        guest = self._guest(job_uid)
        if guest is None:
            return VMState.MISSING
        if guest.state() in (VMState.RUNNING, VMState.PAUSED, VMState.STOPPING):
            if grace_s > 0:
                # The guest may have powered off meanwhile; power_off settles it.
                with contextlib.suppress(DriverError):
                    guest.shutdown()
                deadline = time.monotonic() + grace_s
                while time.monotonic() < deadline and guest.is_active():
                    time.sleep(0.1)
            guest.power_off()
        return guest.state()

    def destroy(self, job_uid: str) -> None:
        self._stop_forwarder(job_uid)
        guest = self._guest(job_uid)
        vm_dirs = {self._vm_dir(job_uid)}
        if guest is not None:
            owner = guest.owner()
            if owner is not None and owner.vm_dir:
                vm_dirs.add(Path(owner.vm_dir))
            guest.power_off()
            guest.undefine()
        for vm_dir in vm_dirs:
            shutil.rmtree(vm_dir, ignore_errors=True)

    def list_own(self) -> list[str]:
        jobs = []
        for dom in self.host.domains(self.prefix):
            owner = Guest(dom).owner()
            if owner is not None and owner.worker_id == self.worker_id:
                jobs.append(owner.job_uid)
        return sorted(jobs)

    def guest_endpoint(self, spec: VMSpec) -> tuple[str, int] | None:
        return network.guest_endpoint(spec)

    def networks(self) -> tuple[Network, ...]:
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
