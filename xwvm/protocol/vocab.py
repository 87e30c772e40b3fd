"""Vocabularies and constants that the server, the worker and the guest must agree on."""

from __future__ import annotations

from enum import Enum
from types import MappingProxyType

try:
    from enum import StrEnum
except ImportError:  # Python < 3.11: guests may run an older Python (stdlib only here)
    class StrEnum(str, Enum):  # type: ignore[no-redef]  # noqa: UP042
        def __str__(self) -> str:
            return str(self.value)


class NetworkPolicy(StrEnum):
    """What a VM job's guest may reach."""

    NONE = "none"          # no NIC at all (inputs and results on an exchange disk)
    SERVER = "server"      # the server endpoint only
    INTERNET = "internet"  # the server and the internet, never the LAN or the host


class JobStatus(StrEnum):
    """A job's status; the transitions between them are the server's (server/states.py)."""

    PENDING = "PENDING"
    WAITING = "WAITING"              # held by its owner
    DATAREQUEST = "DATAREQUEST"      # inputs not uploaded yet
    RUNNING = "RUNNING"
    RESULTREQUEST = "RESULTREQUEST"  # finished, results not uploaded yet
    LOST = "LOST"                    # its worker went silent
    COMPLETED = "COMPLETED"
    ERROR = "ERROR"
    ABORTED = "ABORTED"


TERMINAL_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.ERROR, JobStatus.ABORTED})


class Fault(StrEnum):
    """Why a worker gave a job back: an infrastructure failure, never the payload's. The
    server counts the retry and, for every kind but STOPPING and REFUSED, the host's fault streak
    (its circuit breaker). Payload failures are not faults: they end the job."""

    HYPERVISOR = "hypervisor"  # the hypervisor's connection or service failed
    VM_CRASHED = "vm_crashed"  # QEMU (or VirtualBox's VM process) died under the guest
    IMAGE = "image"            # the template could not be fetched or verified here
    DISK_FULL = "disk_full"    # the worker's disk filled (image cache, overlays, results)
    SERVER = "server"          # the server could not be reached long enough
    HOST = "host"              # any other failure of the worker's host
    STOPPING = "stopping"      # the worker is stopping (its owner, a signal)
    REFUSED = "refused"        # this worker may not run it (a template signed by no key it
    #                            trusts): another may; no fault of the host either

#: The entry of a host's hypervisor probes that says whether it runs native jobs (on the
#: host itself, sandboxed) rather than naming a hypervisor.
NATIVE_ENTRY = "native"

#: How a guest names the server (the name is in the server certificate; the worker maps
#: it to the forwarded endpoint).
GUEST_SERVER_NAME = "xwvm-server"
#: A job that names no wall-clock limit: what the worker allows it and how long its
#: delegated credential lives (plus the server's grace).
DEFAULT_WALL_CLOCK_S = 24 * 3600
#: How long past its wall clock a job may take to end before the server ends it (the
#: reaper); a VM job's delegated credential lives its wall clock plus this.
WALL_CLOCK_GRACE_S = 30
#: How long a pilot VM waits idle for work when its job names no limit.
DEFAULT_PILOT_IDLE_S = 120

#: The hypervisor drivers a worker can run VM jobs with, in the order ``auto`` tries them.
HYPERVISORS = ("libvirt", "virtualbox")

#: The template disk formats any driver knows, in the drivers' preferred order.
DISK_FORMATS = ("qcow2", "raw", "vdi", "vmdk")
#: Each template artifact role and the formats it may have (a disk in one format per
#: template); read-only, shared by the server's schema, the worker and the client.
ARTIFACT_FORMATS = MappingProxyType({"disk": DISK_FORMATS, "kernel": ("linux-kernel",),
                                     "initrd": ("initrd", "initramfs")})
ARTIFACT_ROLES = tuple(ARTIFACT_FORMATS)

#: What a job's exit code may be (signed 32 bits): the exchange disk's verdict, the
#: server's report schema and :class:`~xwvm.protocol.calls.Report` all check it.
EXIT_CODE_MIN = -(1 << 31)
EXIT_CODE_MAX = (1 << 31) - 1

#: The longest message (in characters) a report or an error answer keeps; the rest is cut.
MAX_MESSAGE = 2000
