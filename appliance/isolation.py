"""Who a payload runs as and what it may use, and making sure none of its processes
outlives it: the guest's isolation, and the interface the worker's bubblewrap one extends
(xwvm.worker.sandbox).

In the guest (no bubblewrap) the payload runs as the unprivileged user; the VM itself is
the sandbox. Both isolations: resource limits (``prlimit``: CPU time, address space,
processes, file size, open files), a new session, and ``kill_uid`` before root touches
the job's files again.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from xwvm.protocol.vocab import DEFAULT_WALL_CLOCK_S

TMP_NAME = ".tmp"  # the job's /tmp: a folder of its directory (bound over /tmp by bwrap)


class SandboxUnavailable(Exception):
    """This host cannot sandbox native jobs; the message says why."""


@dataclass(frozen=True)
class Limits:
    """What one payload may use (``prlimit``'s names); every process of it gets these."""

    cpu_s: int
    memory_bytes: int = 4 << 30
    processes: int = 256
    file_bytes: int = 4 << 30
    open_files: int = 1024
    disk_bytes: int = 10 << 30  # all the job's files together (runner.DiskQuota)

    def prlimit(self) -> list[str]:
        return ["prlimit", f"--cpu={self.cpu_s}", f"--as={self.memory_bytes}",
                f"--nproc={self.processes}", f"--fsize={self.file_bytes}",
                f"--nofile={self.open_files}", "--"]


# The owner's ceilings, from the worker's environment (MiB, or a count).
LIMIT_ENV = {"memory_bytes": ("XWVM_JOB_MEMORY_MB", 1 << 20),
             "processes": ("XWVM_JOB_MAX_PROCESSES", 1),
             "file_bytes": ("XWVM_JOB_MAX_FILE_MB", 1 << 20),
             "disk_bytes": ("XWVM_JOB_MAX_DISK_MB", 1 << 20)}


def limits_for(wall_clock_s: int | None) -> Limits:
    """CPU seconds as the wall clock (per process); the rest from the owner's settings
    (``XWVM_JOB_MEMORY_MB``, ``XWVM_JOB_MAX_PROCESSES``, ``XWVM_JOB_MAX_FILE_MB``,
    ``XWVM_JOB_MAX_DISK_MB``)."""
    chosen: dict[str, int] = {}
    for field, (var, unit) in LIMIT_ENV.items():
        value = os.environ.get(var, "")
        if value.isdigit() and int(value) > 0:
            chosen[field] = int(value) * unit
    return Limits(cpu_s=max(1, int(wall_clock_s or DEFAULT_WALL_CLOCK_S)), **chosen)


@dataclass(frozen=True)
class JobAccount:
    uid: int
    gid: int
    name: str


@dataclass(frozen=True)
class Isolation:
    """Payloads run as ``account`` (None: as this process, for tests) with limits, in a new
    session; the VM is the sandbox. Subclasses change how the payload is started."""

    account: JobAccount | None
    kind: ClassVar[str] = "uid"

    def command(self, run_dir: Path, argv: list[str], limits: Limits,
                files: dict[str, Path], env: dict[str, str] | None = None,
                ) -> tuple[list[str], str, dict[str, Any]]:
        """(argv to start, the payload's working directory as it sees it, Popen keywords,
        its environment included). ``files``: read-only files to show inside at these
        paths (where the isolation has an inside). ``env``: the payload's environment."""
        user: dict[str, Any] = {} if self.account is None else {
            "user": self.account.uid, "group": self.account.gid, "extra_groups": []}
        return [*limits.prlimit(), *argv], str(run_dir), {**user, "env": dict(env or {})}

    def program(self, run_dir: Path, program: Path) -> tuple[str, str]:
        """(the program's path, its working directory) as the payload sees them."""
        return str(program), str(run_dir)

    def account_files(self, where: Path) -> dict[str, Path]:
        """Files to show the payload as its /etc/passwd and /etc/group (none here)."""
        return {}

    def namespace(self, pid: int) -> str | None:
        """The pid namespace the payload started by ``pid`` runs in (None: the host's)."""
        return None

    def reap(self, namespace: str | None = None, timeout: float = 10.0) -> None:
        """No process of the payload survives this (called before root packs anything):
        every process of the payload's account is killed."""
        if self.account is not None:
            kill_uid(self.account.uid, timeout)


def guest_isolation(user: str | None) -> Isolation:
    """Inside the appliance VM: the payload user, no bubblewrap (the VM is the sandbox)."""
    if user is None:
        return Isolation(None)
    entry = pwd.getpwnam(user)
    return Isolation(JobAccount(entry.pw_uid, entry.pw_gid, user))


def uid_pids(uid: int) -> list[int]:
    """Live processes with ``uid`` as any of their uids (read from status: a process that
    made itself non-dumpable shows a root-owned /proc entry); zombies are left out."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            status = Path(entry.path, "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        uids = {int(u) for u in fields.get("Uid", "").split()}
        if uid in uids and not fields.get("State", "").strip().startswith(("Z", "X")):
            pids.append(int(entry.name))
    return pids


def _in_namespace(pid: int, namespace: str | None) -> bool:
    if namespace is None:
        return True
    try:
        return os.readlink(f"/proc/{pid}/ns/pid") == namespace
    except OSError:
        return False


def kill_uid(uid: int, timeout: float = 10.0, namespace: str | None = None) -> None:
    """SIGKILL every process of ``uid`` (in pid ``namespace`` only, when given) until none
    is left (a fork loop cannot outrun it: each pass also stops the new ones, and killed
    processes cannot fork)."""
    if uid == 0 or uid == os.geteuid():
        raise ValueError("refusing to kill every process of the caller or root")
    deadline = time.monotonic() + timeout
    while True:
        pids = [p for p in uid_pids(uid) if _in_namespace(p, namespace)]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise SandboxUnavailable(f"processes of uid {uid} survive SIGKILL: {pids[:5]}")
        time.sleep(0.05)
