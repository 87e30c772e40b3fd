"""Running a payload in its job directory and packing its results: the one runner of the
guest's nested worker and of the outer worker's native jobs (which give it bubblewrap,
xwvm.worker.sandbox, as its isolation).

Root (the worker, or the agent in a guest) handles a directory the payload controls: it
never follows the payload's links there. Every walk below is fd-relative with
``O_NOFOLLOW``; links, devices and FIFOs are skipped; ownership changes use the
directory's fd and ``follow_symlinks=False``; and the payload's processes are all gone
(``Isolation.reap``) before root reads anything back.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.isolation import TMP_NAME, Isolation, JobAccount, limits_for

SAFE_ENV = ("PATH", "LANG", "LC_ALL", "TZ")
STOPPED = "stopped by the worker"  # the only end that is not the payload's own doing
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
MAX_DEPTH = 64


@dataclass(frozen=True)
class Command:
    """What to run: the program's arguments, the job's own environment variables and its
    wall-clock limit in seconds (None: the isolation's default limits only)."""

    args: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    wall_clock_s: int | None = None


@dataclass
class Outcome:
    exit_code: int | None
    reason: str  # "" for a normal end, else why it was stopped

    @property
    def stopped(self) -> bool:
        return bool(self.reason)


@dataclass
class Sandbox:
    """``root/run`` is the job's working directory (the only thing the payload may write);
    stdout/stderr and the sandbox's own files go beside it, in ``root``, which only the
    worker may write."""

    root: Path

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def stdout(self) -> Path:
        return self.root / "stdout.txt"

    @property
    def stderr(self) -> Path:
        return self.root / "stderr.txt"

    @property
    def etc_dir(self) -> Path:
        return self.root / "etc"

    def create(self) -> None:
        if self.root.exists():
            shutil.rmtree(self.root)  # fd-based on Linux: it does not follow links
        self.root.parent.mkdir(parents=True, exist_ok=True)
        self.root.mkdir(mode=0o711)
        self.root.chmod(0o711)  # the payload user passes through to run/, reads nothing
        self.run_dir.mkdir(mode=0o700)
        (self.run_dir / TMP_NAME).mkdir(mode=0o700)  # the job's /tmp (see isolation.py)
        self.etc_dir.mkdir(mode=0o755)

    def place(self, cached: Path, name: str, executable: bool = False) -> Path:
        """Copy (never link: the job must not be able to alter the cache) into the sandbox,
        before it is given to the payload's account."""
        dest = self.run_dir / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cached, dest)
        os.chmod(dest, 0o755 if executable else 0o644)
        return dest

    def give_to(self, account: JobAccount | str) -> None:
        """Hand the working directory to the account that runs the payload; links (and
        anything not a file or directory) are left as they are, never followed."""
        if isinstance(account, str):
            import pwd
            entry = pwd.getpwnam(account)
            account = JobAccount(entry.pw_uid, entry.pw_gid, account)
        fd = os.open(self.run_dir, DIR_FLAGS)
        try:
            os.fchown(fd, account.uid, account.gid)
            # Entered by bubblewrap (root without capabilities) before it drops to the
            # account; nobody else can reach it (the sandbox root is 0711, or a VM's).
            os.fchmod(fd, 0o755)
            for dir_fd, name, st, _rel in _walk(fd):
                # A file with other links may be one of root's, hard-linked in.
                if (stat.S_ISREG(st.st_mode) and st.st_nlink == 1) or \
                        stat.S_ISDIR(st.st_mode):
                    os.chown(name, account.uid, account.gid, dir_fd=dir_fd,
                             follow_symlinks=False)
        finally:
            os.close(fd)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _walk(dir_fd: int, prefix: str = "", depth: int = 0
          ) -> Iterator[tuple[int, str, os.stat_result, str]]:
    """(directory fd, entry name, lstat, path relative to the top) for every entry below
    ``dir_fd``; subdirectories are opened from their parent's fd with O_NOFOLLOW, so a
    directory swapped for a link is never entered."""
    if depth > MAX_DEPTH:
        return
    for name in sorted(os.listdir(dir_fd)):
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            continue
        yield dir_fd, name, st, f"{prefix}{name}"
        if not stat.S_ISDIR(st.st_mode):
            continue
        try:
            sub = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
        except OSError:
            continue
        try:
            yield from _walk(sub, f"{prefix}{name}/", depth + 1)
        finally:
            os.close(sub)


def job_env(job_env_vars: Mapping[str, str], home: Path | str,
            base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(base) if base is not None else {k: os.environ[k] for k in SAFE_ENV
                                               if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env["HOME"] = str(home)
    env.update(job_env_vars)
    return env


def run(job: Command, sandbox: Sandbox, program: Path, stdin: Path | None,
        stop: threading.Event, isolation: Isolation, poll: float = 0.1,
        base_env: dict[str, str] | None = None) -> Outcome:
    """Run the job's program in ``isolation``; stop it on ``stop`` or when its wall-clock
    limit passes. When this returns, no process of the payload is left.
    ``base_env``: the environment the job's own variables are added to."""
    wall = job.wall_clock_s
    deadline = time.monotonic() + wall if wall else None
    if isolation.account is not None:
        sandbox.give_to(isolation.account)
    inside, cwd = isolation.program(sandbox.run_dir, program)
    argv = [inside, *job.args]
    argv, cwd, extra = isolation.command(sandbox.run_dir, argv, limits_for(wall),
                                         isolation.account_files(sandbox.etc_dir),
                                         job_env(job.env, cwd, base_env))
    with open(sandbox.stdout, "wb") as out, open(sandbox.stderr, "wb") as err, \
            open(stdin or os.devnull, "rb") as inp:
        proc = subprocess.Popen(argv, cwd=sandbox.run_dir if isolation.kind == "uid" else "/",
                                stdin=inp, stdout=out, stderr=err, start_new_session=True,
                                **extra)
        oom_first(proc.pid)
        reason, namespace = "", None
        quota = DiskQuota(sandbox.run_dir, limits_for(wall).disk_bytes)
        try:
            while proc.poll() is None:
                namespace = namespace or isolation.namespace(proc.pid)
                if stop.is_set():
                    reason = STOPPED
                elif deadline and time.monotonic() > deadline:
                    reason = f"wall-clock limit of {wall} s exceeded"
                else:
                    reason = quota.exceeded()
                if reason:
                    break
                time.sleep(poll)
        finally:
            _kill_group(proc)
            isolation.reap(namespace)
        code = proc.wait()
    return Outcome(exit_code=code, reason=reason)


class DiskQuota:
    """What a job's files may take on the volunteer's disk, all together (RLIMIT_FSIZE
    caps one file only). Measured every ``every_s`` by a walk that never follows links
    and gives up past ``max_entries`` (so many files are a refusal of their own)."""

    def __init__(self, top: Path, limit_bytes: int, every_s: float = 2.0,
                 max_entries: int = 200_000) -> None:
        self.top, self.limit, self.every_s, self.max_entries = top, limit_bytes, every_s, \
            max_entries
        self.next_at = 0.0

    def exceeded(self) -> str:
        """"" while within the quota, else why not."""
        now = time.monotonic()
        if now < self.next_at:
            return ""
        self.next_at = now + self.every_s
        used, entries, stack = 0, 0, [str(self.top)]
        while stack:
            try:
                with os.scandir(stack.pop()) as it:
                    for entry in it:
                        entries += 1
                        if entries > self.max_entries:
                            return f"the job made more than {self.max_entries} files"
                        st = entry.stat(follow_symlinks=False)
                        used += st.st_blocks * 512
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
            except OSError:
                continue  # gone meanwhile, or not ours to read: counted next time
        if used > self.limit:
            return f"the job's files exceeded {self.limit // 2**20} MiB on disk"
        return ""


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the payload's session (bubblewrap's --die-with-parent and pid namespace
    take every process inside with it; ``Isolation.reap`` then kills by uid)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def pack_results(sandbox: Sandbox, placed: dict[str, float], dest: Path,
                 owner: int | None = None) -> Path:
    """A tar.gz of stdout, stderr and every regular file the job created or changed
    (inputs and the program it was given are left out unless it modified them).
    Links, FIFOs and devices are skipped; each file is read through the fd it was
    opened with (O_NOFOLLOW), so a swapped name cannot make root read another file;
    ``owner``: only files of this uid (a hard link to someone else's file is not the
    payload's result)."""
    with tarfile.open(dest, "w:gz") as tar:
        for path, arcname in ((sandbox.stdout, "stdout.txt"), (sandbox.stderr, "stderr.txt")):
            top = os.open(path.parent, DIR_FLAGS)
            try:
                _add_at(tar, top, path.name, arcname, None)
            finally:
                os.close(top)
        try:
            top = os.open(sandbox.run_dir, DIR_FLAGS)
        except OSError:
            return dest  # the payload replaced its directory: nothing of it is packed
        try:
            for dir_fd, name, st, rel in _walk(top):
                if not stat.S_ISREG(st.st_mode) or rel.startswith(f"{TMP_NAME}/"):
                    continue  # the job's /tmp is scratch, not results
                if rel in placed and st.st_mtime == placed[rel]:
                    continue
                _add_at(tar, dir_fd, name, rel, owner)
        finally:
            os.close(top)
    return dest


def _add_at(tar: tarfile.TarFile, dir_fd: int, name: str, arcname: str,
            owner: int | None) -> None:
    """Add the regular file ``name`` in ``dir_fd`` (never through a link) to ``tar``."""
    try:
        fd = os.open(name, FILE_FLAGS, dir_fd=dir_fd)
    except OSError:
        return
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (owner is not None and st.st_uid != owner):
            return
        info = tarfile.TarInfo(arcname)
        info.size, info.mtime, info.mode = st.st_size, int(st.st_mtime), st.st_mode & 0o755
        tar.addfile(info, _Exactly(f, st.st_size))


class _Exactly:
    """Reads exactly ``size`` bytes (zeros after a premature end): a file that shrinks
    while it is packed must not break the archive."""

    def __init__(self, f: Any, size: int) -> None:
        self.f, self.left = f, size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = self.f.read(n)
        data += bytes(n - len(data))
        self.left -= n
        return data


OOM_FIRST = 1000  # the payload is what the OOM killer takes first when memory runs out


def oom_first(pid: int, proc_root: Path = Path("/proc")) -> bool:
    """Make process ``pid`` (the payload, and whatever it starts from now on) the OOM
    killer's first choice. In the guest the agent protects itself (appliance/agent.py):
    a payload that exhausts the VM's memory is killed and its verdict still written, so
    it cannot pass its own failure off as a crashed VM. Best effort: False if refused."""
    try:
        (proc_root / str(pid) / "oom_score_adj").write_text(str(OOM_FIRST))
        return True
    except OSError:
        return False
