"""Running a native job in its sandbox directory and packing its results."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tarfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SAFE_ENV = ("PATH", "LANG", "LC_ALL", "TZ")


@dataclass
class Outcome:
    exit_code: int | None
    reason: str  # "" for a normal end, else why it was stopped

    @property
    def stopped(self) -> bool:
        return bool(self.reason)


@dataclass
class Sandbox:
    """``root/run`` is the job's working directory; stdout/stderr go beside it."""

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

    def create(self) -> None:
        if self.root.exists():
            shutil.rmtree(self.root)
        self.run_dir.mkdir(parents=True)

    def place(self, cached: Path, name: str, executable: bool = False) -> Path:
        """Copy (never link: the job must not be able to alter the cache) into the sandbox."""
        dest = self.run_dir / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cached, dest)
        os.chmod(dest, 0o755 if executable else 0o644)
        return dest

    def give_to(self, user: str) -> None:
        """Hand the working directory to the account that runs the payload."""
        import pwd
        entry = pwd.getpwnam(user)
        for path in [self.run_dir, *self.run_dir.rglob("*")]:
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def job_env(job_env_vars: dict[str, str], home: Path,
            base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(base) if base is not None else {k: os.environ[k] for k in SAFE_ENV
                                               if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env["HOME"] = str(home)
    env.update(job_env_vars)
    return env


def run(job: dict[str, Any], sandbox: Sandbox, program: Path, stdin: Path | None,
        stop: threading.Event, poll: float = 0.1, user: str | None = None,
        base_env: dict[str, str] | None = None) -> Outcome:
    """Run the job's program; stop it on ``stop`` or when its wall-clock limit passes.
    ``user``: run it as this unprivileged account (the caller must be root);
    ``base_env``: the environment the job's own variables are added to."""
    wall = job.get("wall_clock_s")
    deadline = time.monotonic() + wall if wall else None
    with open(sandbox.stdout, "wb") as out, open(sandbox.stderr, "wb") as err, \
            open(stdin or os.devnull, "rb") as inp:
        proc = subprocess.Popen([str(program), *job["args"]], cwd=sandbox.run_dir,
                                env=job_env(job["env"], sandbox.run_dir, base_env),
                                stdin=inp,
                                stdout=out, stderr=err, start_new_session=True,
                                **_as_user(user))
        reason = ""
        while proc.poll() is None:
            if stop.is_set():
                reason = "stopped by the worker"
            elif deadline and time.monotonic() > deadline:
                reason = f"wall-clock limit of {wall} s exceeded"
            if reason:
                _kill_group(proc)
                break
            time.sleep(poll)
        code = proc.wait()
    return Outcome(exit_code=code, reason=reason)


def _as_user(user: str | None) -> dict[str, Any]:
    if user is None:
        return {}
    import pwd
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def pack_results(sandbox: Sandbox, placed: dict[str, float], dest: Path) -> Path:
    """A tar.gz of stdout, stderr and every file the job created or changed (inputs and
    the program it was given are left out unless it modified them)."""
    with tarfile.open(dest, "w:gz") as tar:
        tar.add(sandbox.stdout, arcname="stdout.txt")
        tar.add(sandbox.stderr, arcname="stderr.txt")
        for path in sorted(sandbox.run_dir.rglob("*")):
            if path.is_symlink() or not path.is_file():
                continue
            rel = path.relative_to(sandbox.run_dir).as_posix()
            if rel in placed and path.stat().st_mtime == placed[rel]:
                continue
            tar.add(path, arcname=rel, recursive=False)
    return dest
