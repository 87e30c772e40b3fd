"""The native-job sandbox: who a payload runs as, what it sees, what it may use, and making
sure none of its processes outlives it.

Bubblewrap, on every worker's host, extends the guest's isolation
(appliance.isolation.Isolation: there the payload runs as the guest's unprivileged user
and the VM itself is the sandbox). Bubblewrap gives the payload private mount, pid, IPC,
UTS and network namespaces. Only the job's own directory is bound writable (at
``/job/run``); /usr and a few pieces of /etc are bound read-only; /tmp is the job's own
folder; the worker's work dir, data cache, credential and home are simply not there. No
network at all (a native job is never given the server only: bubblewrap cannot filter,
and ``--share-net`` would be the volunteer's LAN). A root worker runs the payload as the
dedicated account ``xwvm-job`` (bubblewrap as root, then ``setpriv`` drops to it with no
capabilities and no new privileges); an unprivileged worker uses bubblewrap's user
namespace with another uid inside.

Both: resource limits (``prlimit``: CPU time, address space, processes, file size, open
files), a new session, and ``kill_uid`` before root touches the job's files again.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from appliance.isolation import (
    TMP_NAME,
    Isolation,
    JobAccount,
    Limits,
    SandboxUnavailable,
    kill_uid,
)

JOB_USER = "xwvm-job"
JOB_DIR = "/job/run"  # the job directory inside bubblewrap (as on the host, "run")
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
class BwrapIsolation(Isolation):
    """Bubblewrap; ``account`` is who payloads run as (None: a user namespace of an
    unprivileged worker, whose processes the pid namespace confines)."""

    bwrap: str = "bwrap"
    kind: ClassVar[str] = "bwrap"

    def command(self, run_dir: Path, argv: list[str], limits: Limits,
                files: dict[str, Path], env: dict[str, str] | None = None,
                ) -> tuple[list[str], str, dict[str, Any]]:
        """What runs before the payload's account takes over (bwrap, setpriv, as root for
        a root worker) gets an environment of ours alone: the job's variables
        (LD_PRELOAD, say) are set by ``env -i`` only after the drop, so that no code of
        the job ever runs with root's powers."""
        assigned = [f"{k}={v}" for k, v in sorted((env or {}).items())
                    if ENV_NAME.match(k) and "\0" not in v]
        return [self.bwrap, *self._bwrap_args(run_dir, files), "--", *self._drop(),
                "env", "-i", *assigned, *limits.prlimit(), *argv], JOB_DIR, \
            {"env": dict(HELPER_ENV)}

    def program(self, run_dir: Path, program: Path) -> tuple[str, str]:
        """Inside bubblewrap, the job's directory is /job/run."""
        if program.is_relative_to(run_dir):
            return f"{JOB_DIR}/{program.relative_to(run_dir).as_posix()}", JOB_DIR
        return str(program), str(run_dir)

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
        try:
            child = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()[0]
            return os.readlink(f"/proc/{child}/ns/pid")
        except (OSError, IndexError):
            return None

    def reap(self, namespace: str | None = None, timeout: float = 10.0) -> None:
        """No process of the payload survives this (called before root packs anything).
        The pid namespace dies with its init; what is still in it (``namespace``) is
        killed too, and nothing else: another sandbox of the same account is not this
        job's."""
        if self.account is not None and namespace is not None:
            kill_uid(self.account.uid, timeout, namespace)


def host_isolation(account_name: str = JOB_USER) -> BwrapIsolation:
    """The sandbox this host gives native jobs, after a self-test that proves it confines;
    raises SandboxUnavailable with the reason when it cannot."""
    bwrap = bwrap_path()
    if bwrap is None:
        raise SandboxUnavailable("bubblewrap (bwrap) is not installed: native jobs need it "
                                 "(Debian package bubblewrap)")
    account = job_account(account_name) if os.geteuid() == 0 else None
    iso = BwrapIsolation(account, bwrap)
    self_test(iso)
    return iso


def self_test(iso: Isolation) -> None:
    """Run a tiny payload in the sandbox: it must start, run as another uid, and see
    neither this process's files nor a network."""
    import tempfile
    with tempfile.TemporaryDirectory(prefix="xwvm-sandbox-test-") as tmp:
        from appliance.runner import Sandbox  # the job directory exactly as jobs get it
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
