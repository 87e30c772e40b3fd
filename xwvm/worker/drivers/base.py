"""The hypervisor driver contract: one VM per job, named by job uid only.

Every backend (libvirt now, VirtualBox later) implements :class:`Driver`; the
worker above it speaks job uids and :class:`VMSpec` only. Hypervisor names,
UUIDs and library errors never cross this interface: backends translate their
library's errors into :mod:`xwvm.worker.drivers.errors` in one place.

Lifecycle of one job's VM::

    prepare_disk(spec) -> define(spec) -> start(uid) -> state(uid)... -> stop(uid) -> destroy(uid)

Shared behaviour (heartbeats, wall-clock limits, hang detection) lives above the
drivers, written once.
"""

from __future__ import annotations

import abc
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from xwvm.worker.drivers.errors import ConsoleUnreadable, SpecError, VMNotFound

# Worker ids and job uids become parts of VM and file names: keep them to a safe alphabet.
# No underscore: the backends join the two with one ("xwvm_<worker>_<job>"), unambiguously.
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,63}$")
HOST_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.:-]{0,252}$")
DISK_FORMATS = ("qcow2", "raw", "vdi", "vmdk")  # template disk formats any driver knows
# A console log is read from its end, this much at most (reports quote its tail); a guest
# that writes more than CONSOLE_MAX_BYTES to it is stopped (VirtualBox's raw file has no
# rotation, and the volunteer's disk is not the guest's to fill).
CONSOLE_TAIL_BYTES = 64 * 1024
CONSOLE_MAX_BYTES = 64 * 2**20

def read_console(path: Path, limit: int = CONSOLE_TAIL_BYTES) -> str:
    """The last ``limit`` bytes of a console log ("" before it exists). A log the worker
    may not read (virtlogd writes it root-owned 0600 under qemu:///system for a worker
    that is not root) raises ConsoleUnreadable, which says what to do."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - limit))
            text = f.read(limit).decode(errors="replace")
    except FileNotFoundError:
        return ""
    except PermissionError:
        raise ConsoleUnreadable(
            f"the VM console log {path} is not readable by this worker's account (uid "
            f"{os.getuid()}): under qemu:///system virtlogd writes it as root; run the "
            "worker as root or connect it to qemu:///session") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")  # as text mode reads it


def console_size(path: Path) -> int:
    """Bytes written to a console log so far (0 before it exists): progress, without
    reading it."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def wait_for_marker(console: Path, markers: Iterable[str], active: Callable[[], bool],
                    timeout_s: float) -> str:
    """Wait until the console shows one of ``markers``: "" then, else why not (for the
    hypervisor self-test of every backend)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            text = read_console(console)
        except ConsoleUnreadable as e:
            return e.message
        if any(m in text for m in markers):
            return ""
        if not active():
            return "the guest stopped before its marker"
        time.sleep(0.05)
    return f"no marker on the console within {timeout_s:.0f} s"


class VMState(StrEnum):
    DEFINED = "defined"    # defined, never started
    RUNNING = "running"
    PAUSED = "paused"
    STOPPING = "stopping"  # a shutdown was requested and is under way
    SHUTOFF = "shutoff"    # the guest powered off (the payload ended) or was stopped
    CRASHED = "crashed"    # the hypervisor process died or the guest crashed
    MISSING = "missing"    # no such VM: never defined, or destroyed


class Network(StrEnum):
    NONE = "none"          # no NIC at all
    SERVER = "server"      # the server endpoint only
    INTERNET = "internet"  # the server and the internet, never the LAN or the host


@dataclass(frozen=True)
class ProbeResult:
    """What the hypervisor self-test found. ``accel`` is what VMs will use."""

    usable: bool
    accel: str | None  # "kvm" | "tcg" (libvirt), "hw" (VirtualBox) | None when unusable
    reason: str        # why this accel (and not a better one), or why unusable
    version: str = ""  # hypervisor version, e.g. "libvirt 9.0.0, QEMU 7.2.22"

    def to_json(self) -> dict[str, object]:
        return {"usable": self.usable, "accel": self.accel, "reason": self.reason,
                "version": self.version}


@dataclass(frozen=True)
class VMSpec:
    """One job's VM, hypervisor-neutral. Hardening is not optional and not in here:
    each backend's policy module applies the same profile to every spec."""

    job_uid: str
    worker_id: str
    base_image: Path            # the cached template; never written
    base_format: str = "qcow2"  # one of DISK_FORMATS, and of the driver's disk_formats
    vcpus: int = 1
    memory_mb: int = 512
    cpu_quota_percent: int = 100   # share of one host CPU each vCPU may use, 1..100
    disk_cap_mb: int = 0           # the guest's disk size; 0 = the template's own size
    context_iso: Path | None = None
    # network=none jobs: a raw disk the guest reads its inputs from and writes its results
    # to (xwvm.worker.exchange). Attached writable, in place; it belongs to the caller,
    # who reads it after the guest powered off: destroy() never removes it.
    exchange_disk: Path | None = None
    kernel: Path | None = None     # direct kernel boot (the appliance) when set
    initrd: Path | None = None
    cmdline: str | None = None
    network: Network = Network.NONE
    server_endpoint: tuple[str, int] | None = None  # (host, port) the guest may reach
    extra: dict[str, str] = field(default_factory=dict)  # free-form labels, unused by drivers

    def validate(self) -> None:
        """Raise SpecError with every problem found."""
        problems = []
        for name in ("job_uid", "worker_id"):
            if not ID_RE.match(getattr(self, name)):
                problems.append(f"{name} must match {ID_RE.pattern}")
        if self.base_format not in DISK_FORMATS:
            problems.append(f"base_format must be one of {', '.join(DISK_FORMATS)}")
        if not self.base_image.is_absolute():
            problems.append("base_image must be an absolute path")
        if not 1 <= self.vcpus <= 64:
            problems.append("vcpus must be 1..64")
        if not 64 <= self.memory_mb <= 1 << 20:
            problems.append("memory_mb must be 64..1048576")
        if not 1 <= self.cpu_quota_percent <= 100:
            problems.append("cpu_quota_percent must be 1..100")
        if self.disk_cap_mb < 0:
            problems.append("disk_cap_mb must be >= 0")
        if (self.initrd or self.cmdline) and not self.kernel:
            problems.append("initrd and cmdline need a kernel")
        for name in ("kernel", "initrd", "context_iso", "exchange_disk"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_absolute():
                problems.append(f"{name} must be an absolute path")
        if self.network != Network.NONE:
            if self.server_endpoint is None:
                problems.append(f"network={self.network} needs a server_endpoint")
            else:
                host, port = self.server_endpoint
                if not HOST_RE.match(host) or not 1 <= port <= 65535:
                    problems.append("server_endpoint must be (host, port 1..65535)")
        if problems:
            raise SpecError("invalid VM spec: " + "; ".join(problems), details=problems)


class Driver(abc.ABC):
    """One hypervisor on this host, for one worker (``worker_id``).

    Every VM and file a driver makes is tagged with the worker id and the job uid,
    so that :meth:`list_own` and :meth:`cleanup_leftovers` find them again after a
    crash. Methods raise :class:`~xwvm.worker.drivers.errors.DriverError` subclasses
    only. A failed call leaves nothing behind that :meth:`destroy` would not remove.
    """

    name: str = "abstract"
    # The template disk formats this backend boots, preferred first: the worker asks its
    # image cache for a template's disk in one of them.
    disk_formats: tuple[str, ...] = ()

    def __init__(self, worker_id: str, work_dir: Path) -> None:
        if not ID_RE.match(worker_id):
            raise SpecError(f"worker_id must match {ID_RE.pattern}")
        self.worker_id = worker_id
        self.work_dir = Path(work_dir).resolve()

    @abc.abstractmethod
    def probe(self, refresh: bool = False) -> ProbeResult:
        """Self-test the hypervisor: can this host run VMs, and with which acceleration?

        Hardware acceleration is advertised only after a tiny guest actually ran
        under it within a timeout; otherwise software emulation if that works;
        otherwise ``usable=False`` with the reason. Never raises for an unusable
        host. The result is cached for the life of the worker process.
        """

    @abc.abstractmethod
    def prepare_disk(self, spec: VMSpec) -> Path:
        """Create the job's copy-on-write overlay on ``spec.base_image`` and return its path.

        The template is never written; the cost does not depend on the template's
        size. The overlay's virtual size is ``spec.disk_cap_mb`` (the guest can never
        write more than that), or the template's size when 0. Raises SpecError if
        the cap is smaller than the template.
        """

    @abc.abstractmethod
    def define(self, spec: VMSpec) -> None:
        """Define the hardened VM for ``spec`` (overlay prepared if not already).

        Raises VMExists if the job already has a VM, SpecError/Unsupported for a
        spec this driver refuses (for example a network policy it cannot enforce).
        On failure nothing of this job is left defined or on disk.
        """

    @abc.abstractmethod
    def start(self, job_uid: str) -> None:
        """Boot the job's defined VM. On failure the VM stays defined (destroy removes it)."""

    @abc.abstractmethod
    def state(self, job_uid: str) -> VMState:
        """The VM's state now; MISSING (never an error) when there is none."""

    @abc.abstractmethod
    def stop(self, job_uid: str, grace_s: float = 30.0) -> VMState:
        """Ask the guest to shut down (ACPI), and power it off after ``grace_s``.

        The VM stays defined and its console log readable; returns the final
        state. Stopping a VM that is not running (or is missing) is not an error.
        """

    @abc.abstractmethod
    def destroy(self, job_uid: str) -> None:
        """Power off and remove the VM and every file made for it (overlay, console log).

        Idempotent: destroying a missing VM succeeds.
        """

    @abc.abstractmethod
    def networks(self) -> tuple[Network, ...]:
        """The network policies this backend enforces for its guests, as the host record
        advertises them: the scheduler sends a VM job only to a host that enforces the
        job's policy. Every backend enforces ``none`` (no NIC; inputs and results on the
        exchange disk)."""

    @abc.abstractmethod
    def list_own(self) -> list[str]:
        """Job uids of every VM this worker id has defined on this host (any state)."""

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

    def _console_path(self, job_uid: str) -> Path:
        path = self._vm_dir(job_uid) / "console.log"
        if self._guest(job_uid) is None and not path.parent.exists():
            raise VMNotFound(f"job {job_uid} has no VM of worker {self.worker_id}")
        return path

    def cleanup_leftovers(self) -> list[str]:
        """Destroy every VM and remove every file a previous run of this worker left.

        Call it at worker start, before pulling jobs. Returns the job uids cleaned.
        Idempotent.
        """
        cleaned = set(self.list_own())
        for job in cleaned:
            self.destroy(job)
        if self.work_dir.is_dir():
            prefix = self._vm_dir("").name
            for entry in self.work_dir.iterdir():
                if entry.is_dir() and entry.name.startswith(prefix):
                    job = entry.name.removeprefix(prefix)
                    if ID_RE.match(job) and self._guest(job) is None:
                        self._remove_files(job)
                        cleaned.add(job)
        return sorted(cleaned)

    # -- what the shared methods above need from a backend ---------------------------------

    def _vm_dir(self, job_uid: str) -> Path:
        """The folder of one job's VM files (overlay, console log): tagged by name."""
        return self.work_dir / f"xwvm_{self.worker_id}_{job_uid}"

    @abc.abstractmethod
    def _guest(self, job_uid: str) -> object | None:
        """The backend's handle on this worker's VM for the job, or None."""

    def _remove_files(self, job_uid: str) -> None:
        shutil.rmtree(self._vm_dir(job_uid), ignore_errors=True)

    @abc.abstractmethod
    def guest_endpoint(self, spec: VMSpec) -> tuple[str, int] | None:
        """The (address, port) at which the guest reaches ``spec.server_endpoint``, for the
        context ISO (the appliance maps the server's host name to it, so TLS names still
        match); None for network=none."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the hypervisor connection (VMs keep running)."""
