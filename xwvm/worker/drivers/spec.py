"""One job's VM, hypervisor-neutral (:class:`VMSpec`), and the refusals every backend
applies to it the same way: a disk cap below the template, a network it cannot enforce."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from xwvm.protocol.vocab import DISK_FORMATS, NetworkPolicy
from xwvm.worker.drivers.errors import SpecError, Unsupported

# Worker ids and job uids become parts of VM and file names: keep them to a safe alphabet.
# No underscore: the backends join the two with one ("xwvm_<worker>_<job>"), unambiguously.
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,63}$")
HOST_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.:-]{0,252}$")
NO_EGRESS_PROXY = ("network=internet is not supported yet: it needs an egress proxy that "
                   "blocks LAN ranges (RFC 1918, link-local, CGNAT, ULA, loopback)")


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
    # The exchange disk (xwvm.protocol.exchange): a raw disk the guest writes its verdict
    # to (and, for network=none, reads its inputs from and writes its results to).
    # Attached writable, in place; it belongs to the caller, who reads it after the guest
    # powered off: destroy() never removes it.
    exchange_disk: Path | None = None
    kernel: Path | None = None     # direct kernel boot (the appliance) when set
    initrd: Path | None = None
    cmdline: str | None = None
    network: NetworkPolicy = NetworkPolicy.NONE
    server_endpoint: tuple[str, int] | None = None  # (host, port) the guest may reach
    extra: dict[str, str] = field(default_factory=dict)  # free-form labels, unused by drivers

    def validate(self) -> None:
        """Raise SpecError with every problem found."""
        problems = [*self._id_problems(), *self._size_problems(), *self._path_problems(),
                    *self._network_problems()]
        if problems:
            raise SpecError("invalid VM spec: " + "; ".join(problems), details=problems)

    def _id_problems(self) -> list[str]:
        problems = [f"{name} must match {ID_RE.pattern}" for name in ("job_uid", "worker_id")
                    if not ID_RE.match(getattr(self, name))]
        if self.base_format not in DISK_FORMATS:
            problems.append(f"base_format must be one of {', '.join(DISK_FORMATS)}")
        if not self.base_image.is_absolute():
            problems.append("base_image must be an absolute path")
        return problems

    def _size_problems(self) -> list[str]:
        checks = [(1 <= self.vcpus <= 64, "vcpus must be 1..64"),
                  (64 <= self.memory_mb <= 1 << 20, "memory_mb must be 64..1048576"),
                  (1 <= self.cpu_quota_percent <= 100, "cpu_quota_percent must be 1..100"),
                  (self.disk_cap_mb >= 0, "disk_cap_mb must be >= 0")]
        return [problem for ok, problem in checks if not ok]

    def _path_problems(self) -> list[str]:
        problems = []
        if (self.initrd or self.cmdline) and not self.kernel:
            problems.append("initrd and cmdline need a kernel")
        for name in ("kernel", "initrd", "context_iso", "exchange_disk"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_absolute():
                problems.append(f"{name} must be an absolute path")
        return problems

    def _network_problems(self) -> list[str]:
        if self.network == NetworkPolicy.NONE:
            return []
        if self.server_endpoint is None:
            return [f"network={self.network} needs a server_endpoint"]
        host, port = self.server_endpoint
        if not HOST_RE.match(host) or not 1 <= port <= 65535:
            return ["server_endpoint must be (host, port 1..65535)"]
        return []


def disk_size(spec: VMSpec, template_size: int) -> int:
    """The job disk's virtual size in bytes: its cap, or the template's size when 0.
    A cap below the template is refused (the guest's file system would not fit)."""
    cap = spec.disk_cap_mb * 1024 * 1024
    if cap and cap < template_size:
        raise SpecError(f"disk_cap_mb {spec.disk_cap_mb} is smaller than the template "
                        f"({template_size // (1024 * 1024)} MiB)")
    return cap or template_size


def refuse_unenforced(spec: VMSpec, enforced: tuple[NetworkPolicy, ...],
                      server_reason: str) -> None:
    """Raise Unsupported when ``spec.network`` is not among the policies a backend
    ``enforced`` on this host (never widened silently); ``server_reason`` says why a
    backend cannot give network=server here."""
    if spec.network in enforced:
        return
    if spec.network == NetworkPolicy.INTERNET:
        raise Unsupported(NO_EGRESS_PROXY)
    raise Unsupported(server_reason)
