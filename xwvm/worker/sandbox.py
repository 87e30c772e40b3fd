"""The native-job sandbox: who a payload runs as, what it sees, what it may use, and making
sure none of its processes outlives it.

Two isolations, one interface (``Isolation.command``):

* ``bwrap`` (every worker on the host): bubblewrap gives the payload private mount, pid,
  IPC, UTS and network namespaces. Only the job's own directory is bound writable (at
  ``/job/run``); /usr and a few pieces of /etc are bound read-only; /tmp is a tmpfs; the
  worker's work dir, data cache, credential and home are simply not there. No network
  at all (a native job is never given the server only: bubblewrap cannot filter, and
  ``--share-net`` would be the volunteer's LAN). A root worker runs the payload as the
  dedicated account ``xwvm-job`` (bubblewrap as root, then ``setpriv`` drops to it with
  no capabilities and no new privileges); an unprivileged worker uses bubblewrap's user
  namespace with another uid inside.
* ``uid`` (the appliance guest, which has no bubblewrap): the payload runs as the guest's
  unprivileged user; the VM itself is the sandbox.

Both: resource limits (``prlimit``: CPU time, address space, processes, file size, open
files), a new session, and ``kill_uid`` before root touches the job's files again.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

JOB_USER = "xwvm-job"
JOB_DIR = "/job/run"  # the job directory inside bubblewrap (as on the host, "run")
TMP_NAME = ".tmp"  # the job's /tmp: a folder of its directory, bound over /tmp
# Set XWVM_BWRAP to another path (or to a missing one) to choose, or disable, bubblewrap.
BWRAP_ENV = "XWVM_BWRAP"
# /usr holds the system's programs; Debian's /bin, /lib... are links into it. Nothing
# else of the host's file tree is visible, except these read-only pieces of /etc.
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives",
             "/etc/localtime", "/etc/nsswitch.conf", "/etc/mime.types")


# What bubblewrap and setpriv run with (root's, for a root worker): nothing of the job's.
HELPER_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}\Z")


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
    disk_bytes: int = 10 << 30  # all the job's files together (native.DiskQuota)

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
    return Limits(cpu_s=max(1, int(wall_clock_s or 24 * 3600)), **chosen)


@dataclass(frozen=True)
class JobAccount:
    uid: int
    gid: int
    name: str


def job_account(name: str = JOB_USER, create: bool = True) -> JobAccount:
    """The dedicated account native payloads run as (a root worker creates it once)."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        if not create or os.geteuid() != 0 or not shutil.which("useradd"):
            raise SandboxUnavailable(f"no account {name} to run jobs as "
                                     "(scripts/install-system.sh creates it)") from None
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home",
                        "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name],
                       check=True, capture_output=True, timeout=30)
        entry = pwd.getpwnam(name)
    if entry.pw_uid == 0 or entry.pw_uid == os.geteuid():
        raise SandboxUnavailable(f"account {name} is not distinct from the worker's")
    return JobAccount(entry.pw_uid, entry.pw_gid, name)


def bwrap_path() -> str | None:
    """bubblewrap as this worker will run it (None: not there)."""
    chosen = os.environ.get(BWRAP_ENV)
    if chosen is not None:
        return chosen if os.access(chosen, os.X_OK) else None
    return shutil.which("bwrap")


@dataclass(frozen=True)
class Isolation:
    """How payloads run on this machine; ``account`` is who they run as (None: a user
    namespace of an unprivileged worker, whose processes the pid namespace confines)."""

    kind: str  # "bwrap" | "uid"
    account: JobAccount | None
    bwrap: str | None = None

    def command(self, run_dir: Path, argv: list[str], limits: Limits,
                files: dict[str, Path], env: dict[str, str] | None = None,
                ) -> tuple[list[str], str, dict[str, Any]]:
        """(argv to start, the payload's working directory as it sees it, Popen keywords,
        its environment included). ``files``: read-only files to show inside at these
        paths (bwrap only). ``env``: the payload's environment.

        Under bubblewrap, what runs before the payload's account takes over (bwrap,
        setpriv, as root for a root worker) gets an environment of ours alone: the job's
        variables (LD_PRELOAD, say) are set by ``env -i`` only after the drop, so that no
        code of the job ever runs with root's powers."""
        env = dict(env or {})
        if self.kind == "uid":
            return ([*limits.prlimit(), *argv], str(run_dir),
                    {**self._popen_user(), "env": env})
        assert self.bwrap is not None
        assigned = [f"{k}={v}" for k, v in sorted(env.items())
                    if ENV_NAME.match(k) and "\0" not in v]
        return [self.bwrap, *self._bwrap_args(run_dir, files), "--", *self._drop(),
                "env", "-i", *assigned, *limits.prlimit(), *argv], JOB_DIR, \
            {"env": dict(HELPER_ENV)}

    def _popen_user(self) -> dict[str, Any]:
        if self.account is None:
            return {}
        return {"user": self.account.uid, "group": self.account.gid, "extra_groups": []}

    def _drop(self) -> list[str]:
        """As root inside the namespaces, become the job account for good."""
        if self.account is None:
            return []
        return ["setpriv", f"--reuid={self.account.uid}", f"--regid={self.account.gid}",
                "--clear-groups", "--inh-caps=-all", "--no-new-privs", "--"]

    def _bwrap_args(self, run_dir: Path, files: dict[str, Path]) -> list[str]:
        args = ["--die-with-parent", "--new-session", "--unshare-ipc", "--unshare-pid",
                "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
                "--hostname", "xwvm-job", "--proc", "/proc", "--dev", "/dev",
                "--perms", "0755", "--dir", "/etc", "--perms", "0755", "--dir", "/var"]
        if self.account is None:  # unprivileged: a user namespace, another uid inside
            args += ["--unshare-user", "--uid", "1000", "--gid", "1000", "--disable-userns"]
        else:  # root: only what setpriv needs to drop to the job account
            args += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add",
                     "CAP_SETGID"]
        for d in SYSTEM_DIRS:
            if os.path.islink(d):
                args += ["--symlink", os.readlink(d), d]
            elif os.path.isdir(d):
                args += ["--ro-bind", d, d]
        for f in ETC_FILES:
            args += ["--ro-bind-try", f, f]
        for dest, src in files.items():
            args += ["--ro-bind", str(src), dest]
        # bwrap makes missing parents 0700: the payload's account must pass through /job.
        args += ["--perms", "0755", "--dir", os.path.dirname(JOB_DIR),
                 "--bind", str(run_dir), JOB_DIR, "--chdir", JOB_DIR]
        # /tmp and /var/tmp are the job's own folder on disk (counted with its files), not
        # a tmpfs: bwrap 0.8's tmpfs has no size, and lived in the volunteer's memory.
        tmp = run_dir / TMP_NAME
        if tmp.is_dir() and not tmp.is_symlink():
            args += ["--bind", str(tmp), "/tmp", "--bind", str(tmp), "/var/tmp"]
        else:
            args += ["--perms", "0755", "--dir", "/tmp"]
        return args

    def account_files(self, where: Path) -> dict[str, Path]:
        """A minimal /etc/passwd and /etc/group for inside (the host's are not shown)."""
        if self.kind != "bwrap":
            return {}
        uid, gid, name = (self.account.uid, self.account.gid, self.account.name) \
            if self.account else (1000, 1000, JOB_USER)
        passwd, group = where / "passwd", where / "group"
        passwd.write_text(f"root:x:0:0:root:/:/usr/sbin/nologin\n"
                          f"{name}:x:{uid}:{gid}::{JOB_DIR}:/bin/sh\n"
                          "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
        group.write_text(f"root:x:0:\n{name}:x:{gid}:\nnogroup:x:65534:\n")
        passwd.chmod(0o644)
        group.chmod(0o644)
        return {"/etc/passwd": passwd, "/etc/group": group}

    def namespace(self, pid: int) -> str | None:
        """The pid namespace of ``pid``'s child (bubblewrap's init inside the sandbox)."""
        if self.kind != "bwrap":
            return None
        try:
            child = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()[0]
            return os.readlink(f"/proc/{child}/ns/pid")
        except (OSError, IndexError):
            return None

    def reap(self, namespace: str | None = None, timeout: float = 10.0) -> None:
        """No process of the payload survives this (called before root packs anything).
        In the guest: every process of the payload user. Under bubblewrap the pid
        namespace dies with its init; what is still in it (``namespace``) is killed too,
        and nothing else: another sandbox of the same account is not this job's."""
        if self.account is None:
            return
        if self.kind == "uid":
            kill_uid(self.account.uid, timeout)
        elif namespace is not None:
            kill_uid(self.account.uid, timeout, namespace)


def host_isolation(account_name: str = JOB_USER) -> Isolation:
    """The sandbox this host gives native jobs, after a self-test that proves it confines;
    raises SandboxUnavailable with the reason when it cannot."""
    bwrap = bwrap_path()
    if bwrap is None:
        raise SandboxUnavailable("bubblewrap (bwrap) is not installed: native jobs need it "
                                 "(Debian package bubblewrap)")
    account = job_account(account_name) if os.geteuid() == 0 else None
    iso = Isolation("bwrap", account, bwrap)
    self_test(iso)
    return iso


def guest_isolation(user: str | None) -> Isolation:
    """Inside the appliance VM: the payload user, no bubblewrap (the VM is the sandbox)."""
    if user is None:
        return Isolation("uid", None)
    entry = pwd.getpwnam(user)
    return Isolation("uid", JobAccount(entry.pw_uid, entry.pw_gid, user))


def self_test(iso: Isolation) -> None:
    """Run a tiny payload in the sandbox: it must start, run as another uid, and see
    neither this process's files nor a network."""
    import tempfile
    with tempfile.TemporaryDirectory(prefix="xwvm-sandbox-test-") as tmp:
        from xwvm.worker.native import Sandbox  # the job directory exactly as jobs get it
        box = Sandbox(Path(tmp) / "box")
        box.create()
        run_dir = box.run_dir
        if iso.account is not None:
            box.give_to(iso.account)
        etc = Path(tmp) / "etc"
        etc.mkdir()
        probe = (f'test ! -e "{tmp}" && test ! -e /proc/1/root/{tmp.lstrip("/")} && '
                 'test -z "$(ls /sys/class/net 2>/dev/null | grep -v ^lo$)" && '
                 'echo ok > probe && ls / /etc >/dev/null && id -un >/dev/null && id -u')
        argv, cwd, extra = iso.command(run_dir, ["/bin/sh", "-c", probe], Limits(cpu_s=10),
                                       iso.account_files(etc))
        try:
            proc = subprocess.run(argv, cwd="/", capture_output=True, text=True, timeout=30,
                                  stdin=subprocess.DEVNULL, **extra)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise SandboxUnavailable(f"bubblewrap self-test could not run: {e}") from None
        if proc.returncode != 0 or not (run_dir / "probe").is_file():
            detail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]
            raise SandboxUnavailable(f"bubblewrap self-test failed (exit {proc.returncode}: "
                                     f"{detail})")
        if proc.stdout.strip() == str(os.geteuid()) and iso.account is not None:
            raise SandboxUnavailable("bubblewrap self-test: the payload ran as the worker")


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
