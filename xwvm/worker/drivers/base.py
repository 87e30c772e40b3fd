"""The hypervisor driver contract, and the behaviour every backend shares, written once.

Every backend (libvirt, VirtualBox) subclasses :class:`Driver` and implements only small
primitives: find one VM (a :class:`Guest`), list its VMs, make a job's disk, create the
hardened VM, boot the probe guest. Naming, ownership, ``define``/``start``/``state``/
``stop`` (graceful, then forced), ``destroy``, crash-safe cleanup, the template-format,
disk-cap and unsupported-network refusals, console reading and the probe's boot-and-wait live
here. The worker above speaks job uids and :class:`VMSpec` only: hypervisor names, UUIDs
and library errors never cross this interface (each backend translates its library's
errors into :mod:`xwvm.worker.drivers.errors` in one place).

The public interface is what the worker calls: ``probe``, ``networks``, ``disk_formats``,
``cleanup_leftovers`` (at start; ``list_own`` underneath), ``guest_endpoint``, ``define``
(``prepare_disk`` underneath), ``start``, ``state``, ``stop``, ``console_log``/
``console_size``, ``destroy``, ``close``. Everything else is private to the drivers.

Lifecycle of one job's VM::

    prepare_disk(spec) -> define(spec) -> start(uid) -> state(uid)... -> stop(uid) -> destroy(uid)
"""

from __future__ import annotations

import abc
import os
import shutil
import time
from collections.abc import Iterable
from contextlib import suppress
from pathlib import Path

from xwvm.protocol.messages import HypervisorProbe
from xwvm.protocol.vocab import NetworkPolicy
from xwvm.worker.drivers.console import console_size, read_console, wait_for_marker
from xwvm.worker.drivers.errors import (
    DriverError,
    HypervisorUnavailable,
    SpecError,
    Unsupported,
    VMExists,
    VMNotFound,
)
from xwvm.worker.drivers.probe import PROBE_MARKER
from xwvm.worker.drivers.spec import ID_RE, VMSpec, refuse_unenforced
from xwvm.worker.drivers.vm import ACTIVE, Guest, VMState

__all__ = ["Driver", "VMSpec", "VMState", "unusable", "usable"]


def usable(accel: str, reason: str, version: str) -> HypervisorProbe:
    """A probe's finding that VMs run here, under ``accel``: why this one, and the version."""
    return HypervisorProbe(usable=True, accel=accel, reason=reason, version=version)


def unusable(reason: str, version: str = "") -> HypervisorProbe:
    """A probe's finding that VMs cannot run here, and why."""
    return HypervisorProbe(usable=False, accel=None, reason=reason, version=version)


class Driver(abc.ABC):
    """One hypervisor on this host, for one worker (``worker_id``).

    Every VM and file a driver makes is tagged with the worker id and the job uid,
    so that :meth:`list_own` and :meth:`cleanup_leftovers` find them again after a
    crash. Methods raise :class:`~xwvm.worker.drivers.errors.DriverError` subclasses
    only. A failed call leaves nothing behind that :meth:`destroy` would not remove.
    """

    name: str = "abstract"
    label: str = "abstract"  # the hypervisor, as messages name it
    # The template disk formats this backend boots, preferred first: the worker asks its
    # image cache for a template's disk in one of them.
    disk_formats: tuple[str, ...] = ()
    probe_memory_mb = 128
    # Why a host of this backend may not enforce network=server (when networks() lacks it).
    server_refusal = "network=server is not enforced on this host"

    def __init__(self, worker_id: str, work_dir: Path) -> None:
        if not ID_RE.match(worker_id):
            raise SpecError(f"worker_id must match {ID_RE.pattern}")
        self.worker_id = worker_id
        self.work_dir = Path(work_dir).resolve()
        self.prefix = f"xwvm_{worker_id}_"

    # -- the contract: what the worker calls ------------------------------------------------

    @abc.abstractmethod
    def probe(self, refresh: bool = False) -> HypervisorProbe:
        """Self-test the hypervisor: can this host run VMs, and with which acceleration?

        Hardware acceleration is advertised only after a tiny guest actually ran
        under it within a timeout; otherwise software emulation if that works;
        otherwise ``usable=False`` with the reason. Never raises for an unusable
        host. The result is cached for the life of the worker process.
        """

    def prepare_disk(self, spec: VMSpec) -> Path:
        """Create the job's copy-on-write overlay on ``spec.base_image`` and return its path.

        The template is never written; the cost does not depend on the template's
        size. The overlay's virtual size is ``spec.disk_cap_mb`` (the guest can never
        write more than that), or the template's size when 0. Raises SpecError if
        the cap is smaller than the template.
        """
        self._check(spec)
        if self._guest(spec.job_uid) is not None:
            raise VMExists(f"job {spec.job_uid} already has a VM")
        vm_dir = self._vm_dir(spec.job_uid)
        self._make_vm_dir(vm_dir)
        try:
            return self._make_disk(spec, vm_dir)
        except BaseException:
            self._remove_folder(vm_dir)
            raise

    def define(self, spec: VMSpec) -> None:
        """Define the hardened VM for ``spec`` (overlay prepared if not already).

        Raises VMExists if the job already has a VM, SpecError/Unsupported for a
        spec this driver refuses (for example a network policy it cannot enforce).
        On failure nothing of this job is left defined or on disk.
        """
        self._check(spec)
        accel = self._usable_accel()
        if self._guest(spec.job_uid) is not None:
            raise VMExists(f"job {spec.job_uid} already has a VM")
        self._refuse(spec)  # before any file is made
        self._define(spec, accel)

    def start(self, job_uid: str) -> None:
        """Boot the job's defined VM. On failure the VM stays defined (destroy removes it)."""
        self._require(job_uid).start()

    def state(self, job_uid: str) -> VMState:
        """The VM's state now; MISSING (never an error) when there is none."""
        guest = self._guest(job_uid)
        return VMState.MISSING if guest is None else guest.state()

    def stop(self, job_uid: str, grace_s: float = 30.0) -> VMState:
        """Ask the guest to shut down (ACPI), and power it off after ``grace_s``.

        The VM stays defined and its console log readable; returns the final
        state. Stopping a VM that is not running (or is missing) is not an error.
        """
        guest = self._guest(job_uid)
        if guest is None:
            return VMState.MISSING
        if guest.state() in ACTIVE:
            if grace_s > 0:
                # The guest may have powered off meanwhile; power_off settles it.
                with suppress(DriverError):
                    guest.shutdown()
                deadline = time.monotonic() + grace_s
                while time.monotonic() < deadline and guest.is_active():
                    time.sleep(0.1)
            guest.power_off()
        return guest.state()

    def destroy(self, job_uid: str) -> None:
        """Power off and remove the VM and every file made for it (overlay, console log).

        Idempotent: destroying a missing VM succeeds.
        """
        self._release(job_uid)
        guest = self._guest(job_uid)
        folders = [self._vm_dir(job_uid)]
        if guest is not None:
            owner = guest.owner()
            # The folder the VM recorded (an earlier run's work dir), if it is named as ours.
            if owner is not None and owner.vm_dir and \
                    Path(owner.vm_dir).name == folders[0].name:
                folders.append(Path(owner.vm_dir))
            guest.power_off()
            guest.undefine()
        for folder in dict.fromkeys(folders):
            self._remove_folder(folder)

    @abc.abstractmethod
    def networks(self) -> tuple[NetworkPolicy, ...]:
        """The network policies this backend enforces for its guests, as the host record
        advertises them: the scheduler sends a VM job only to a host that enforces the
        job's policy. Every backend enforces ``none`` (no NIC; inputs and results on the
        exchange disk)."""

    def list_own(self) -> list[str]:
        """Job uids of every VM this worker id has defined on this host (any state)."""
        jobs = []
        for guest in self._guests():
            try:
                owner = guest.owner()
            except DriverError:
                continue  # inaccessible, or removed meanwhile
            if owner is not None and owner.worker_id == self.worker_id and owner.job_uid \
                    and guest.name == self.prefix + owner.job_uid:
                jobs.append(owner.job_uid)
        return sorted(jobs)

    def console_log(self, job_uid: str) -> str:
        """The end of the guest's serial console output (at most CONSOLE_TAIL_BYTES; ""
        before the first byte).

        Raises VMNotFound if the job has no VM, ConsoleUnreadable if the worker may not
        read the log.
        """
        return read_console(self._console_path(job_uid))

    def console_size(self, job_uid: str) -> int:
        """How many bytes the guest wrote to its console so far. Raises VMNotFound if the
        job has no VM."""
        return console_size(self._console_path(job_uid))

    def guest_endpoint(self, spec: VMSpec) -> tuple[str, int] | None:
        """The (address, port) at which the guest reaches ``spec.server_endpoint``, for the
        context ISO (the appliance maps the server's host name to it, so TLS names still
        match); None for network=none."""
        if spec.network == NetworkPolicy.NONE or spec.server_endpoint is None:
            return None
        return self._server_address(spec.server_endpoint)

    def cleanup_leftovers(self) -> list[str]:
        """Destroy every VM and remove every file a previous run of this worker left.

        Call it at worker start, before pulling jobs. Returns the job uids cleaned.
        Idempotent.
        """
        cleaned = set(self.list_own())
        for job in cleaned:
            self.destroy(job)
        if self.work_dir.is_dir():
            for entry in self.work_dir.iterdir():
                if entry.is_dir() and entry.name.startswith(self.prefix):
                    job = entry.name.removeprefix(self.prefix)
                    if ID_RE.match(job) and self._guest(job) is None:
                        self._remove_folder(entry)
                        cleaned.add(job)
        return sorted(cleaned)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the hypervisor connection (VMs keep running)."""

    # -- shared steps ------------------------------------------------------------------------

    def _name(self, job_uid: str) -> str:
        """The hypervisor's name for the job's VM: ``xwvm_<worker>_<job>``."""
        if not ID_RE.match(job_uid):
            raise SpecError(f"job_uid must match {ID_RE.pattern}")
        return self.prefix + job_uid

    def _vm_dir(self, job_uid: str) -> Path:
        """The folder of one job's VM files (overlay, console log): tagged by name."""
        return self.work_dir / f"{self.prefix}{job_uid}"

    def _console_path(self, job_uid: str) -> Path:
        path = self._vm_dir(job_uid) / "console.log"
        if self._guest(job_uid) is None and not path.parent.exists():
            raise VMNotFound(f"job {job_uid} has no VM of worker {self.worker_id}")
        return path

    def _guest(self, job_uid: str) -> Guest | None:
        """This worker's VM for the job, or None (a VM of that name that is not tagged as
        ours is never touched)."""
        guest = self._lookup(self._name(job_uid))
        if guest is None:
            return None
        owner = guest.owner()
        if owner is None or owner.worker_id != self.worker_id or owner.job_uid != job_uid:
            return None
        return guest

    def _require(self, job_uid: str) -> Guest:
        guest = self._guest(job_uid)
        if guest is None:
            raise VMNotFound(f"job {job_uid} has no VM of worker {self.worker_id}")
        return guest

    def _check(self, spec: VMSpec) -> None:
        """Refuse a spec that is invalid, of another worker, or over a template this backend
        does not boot (checked before any file is made)."""
        spec.validate()
        if spec.worker_id != self.worker_id:
            raise SpecError(f"spec is for worker {spec.worker_id}, driver is {self.worker_id}")
        if spec.base_format not in self.disk_formats:
            raise Unsupported(f"the {self.label} driver boots "
                              f"{' or '.join(self.disk_formats)} templates, "
                              f"not {spec.base_format}")

    def _refuse(self, spec: VMSpec) -> None:
        """Refuse, before any file is made, what this host cannot enforce."""
        refuse_unenforced(spec, self.networks(), self.server_refusal)

    def _usable_accel(self) -> str:
        result = self.probe()
        if not result.usable or result.accel is None:
            raise HypervisorUnavailable(f"{self.label} cannot run VMs here: {result.reason}")
        return result.accel

    def _define(self, spec: VMSpec, accel: str) -> None:
        """Make the job's files and VM; on any failure remove whatever was made."""
        vm_dir = self._vm_dir(spec.job_uid)
        try:
            self._make_vm_dir(vm_dir)
            self._create(spec, vm_dir, accel)
        except BaseException:
            self._discard(spec.job_uid)
            raise

    def _discard(self, job_uid: str) -> None:
        """Remove what a failed or finished attempt left (best effort)."""
        with suppress(DriverError):
            self.destroy(job_uid)
        self._remove_folder(self._vm_dir(job_uid))

    def _make_vm_dir(self, vm_dir: Path) -> None:
        vm_dir.mkdir(parents=True, exist_ok=True)
        # The hypervisor's process may run as another user (libvirt-qemu): it must traverse
        # this folder (it is handed each file), but needs no listing.
        vm_dir.chmod(0o711)

    def _copy_context(self, spec: VMSpec, vm_dir: Path) -> Path | None:
        """A copy of the context ISO that the VM owns (the hypervisor may relabel or hold
        it; destroy() removes it), 0600 from the start: it holds the delegated token."""
        if spec.context_iso is None:
            return None
        iso = vm_dir / "context.iso"
        os.close(os.open(iso, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        shutil.copyfile(spec.context_iso, iso)
        return iso

    def _boot_probe(self, accel: str, timeout_s: float,
                    markers: Iterable[str] = (PROBE_MARKER,)) -> str:
        """Boot the probe guest under ``accel``; "" if its console showed one of
        ``markers`` within ``timeout_s``, else why not. Always removes what it made."""
        job = f"probe-{accel}"
        vm_dir = self._vm_dir(job)
        self._discard(job)
        self._make_vm_dir(vm_dir)
        guest = None
        try:
            guest = self._launch_probe(self._probe_spec(job, vm_dir), vm_dir, accel)
            return wait_for_marker(vm_dir / "console.log", markers, guest.is_active,
                                   timeout_s)
        except DriverError as e:
            return e.message
        finally:
            if guest is not None:
                with suppress(DriverError):
                    guest.power_off()
            self._discard(job)

    def _remove_folder(self, folder: Path) -> None:
        shutil.rmtree(folder, ignore_errors=True)

    def _release(self, job_uid: str) -> None:  # noqa: B027 - optional hook
        """Release what this process holds for the job's VM (before destroy removes it)."""

    # -- what a backend implements -------------------------------------------------------

    @abc.abstractmethod
    def _lookup(self, name: str) -> Guest | None:
        """The VM called ``name`` on this host, whoever made it; None if there is none."""

    @abc.abstractmethod
    def _guests(self) -> Iterable[Guest]:
        """This host's VMs whose names start with this worker's prefix (at least)."""

    @abc.abstractmethod
    def _make_disk(self, spec: VMSpec, vm_dir: Path) -> Path:
        """The job's disk over its template in ``vm_dir`` (the one already there, if any),
        sized by :func:`~xwvm.worker.drivers.spec.disk_size`."""

    @abc.abstractmethod
    def _create(self, spec: VMSpec, vm_dir: Path, accel: str) -> None:
        """Make the job's disk, copy its context ISO and define its hardened VM."""

    @abc.abstractmethod
    def _server_address(self, server: tuple[str, int]) -> tuple[str, int]:
        """Where a guest with network=server reaches ``server`` (host, port)."""

    @abc.abstractmethod
    def _probe_spec(self, job: str, vm_dir: Path) -> VMSpec:
        """Write the probe guest's files into ``vm_dir``; its spec."""

    @abc.abstractmethod
    def _launch_probe(self, spec: VMSpec, vm_dir: Path, accel: str) -> Guest:
        """Create and boot the probe guest; its handle."""
