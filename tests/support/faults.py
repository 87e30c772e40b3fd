"""Real faults for the fault-injection suite (tests/faults/): a worker paused at a step of a
VM job's life (``XWVM_FAILPOINTS``, xwvm/worker/faults.py), the faults injected there
(libvirtd restarted, QEMU killed, the server unreachable, PostgreSQL restarted, a full
filesystem) and what a job must never leave behind."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.support import appkeys
from tests.support.postgres import PostgresServer
from tests.support.processes import XWVM, WorkerProcess
from xwvm.worker.faults import FAILPOINTS_ENV

VIRSH = ["virsh", "-c", "qemu:///system"]


class FaultWorker(WorkerProcess):
    """A worker process with extra environment: ``failpoints`` names the steps where it
    pauses (the marker ``<work_dir>/failpoints/<step>`` exists while it waits)."""

    def __init__(self, root: Path, credential: Path, name: str, extra: list[str],
                 failpoints: str = "") -> None:
        super().__init__(root, credential, name, extra)
        self.failpoints = failpoints
        self._resuming = threading.Event()

    def start(self) -> FaultWorker:
        self.root.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop(FAILPOINTS_ENV, None)
        if self.failpoints:
            env[FAILPOINTS_ENV] = self.failpoints
        with open(self.root / f"{self.name}.log", "ab") as log:
            self.proc = subprocess.Popen(
                [*XWVM, "worker", "run", "--credential", str(self.credential), "--work-dir",
                 str(self.work_dir), "--name", self.name, *self.extra,
                 "--trusted-key", str(appkeys.public_key())],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def restarted(self, failpoints: str = "") -> FaultWorker:
        """The same worker (work dir, credential, name) started again."""
        again = FaultWorker(self.root, self.credential, self.name, self.extra, failpoints)
        again.work_dir = self.work_dir
        return again.start()

    @property
    def worker_id(self) -> str:
        return (self.work_dir / "worker-id").read_text().strip()

    def marker(self, step: str) -> Path:
        return self.work_dir / "failpoints" / step

    def paused(self, step: str, timeout: float = 300) -> str:
        """Wait until the worker pauses at ``step``; the uid of the job it holds there."""
        marker = self.marker(step)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"worker {self.name} exited ({self.proc.returncode}) "
                                     f"before pausing at {step}:\n{self.log[-3000:]}")
            with contextlib.suppress(FileNotFoundError):
                uid = marker.read_text().strip()
                if uid:
                    return uid
            time.sleep(0.1)
        raise AssertionError(f"worker {self.name} did not pause at {step} within {timeout} s "
                             f"(no {marker}); log tail:\n{self.log[-3000:]}")

    def resume(self, step: str, *, from_now_on: bool = True) -> None:
        """Let the worker go on from ``step``; ``from_now_on``: and from every later pause
        (a job given back pauses again when it runs again)."""
        self.marker(step).unlink(missing_ok=True)
        if from_now_on and not self._resuming.is_set():
            self._resuming.set()
            threading.Thread(target=self._keep_resuming, daemon=True).start()

    def _keep_resuming(self) -> None:
        folder = self.work_dir / "failpoints"
        while self.proc is not None and self.proc.poll() is None:
            for m in folder.glob("*") if folder.is_dir() else ():
                m.unlink(missing_ok=True)
            time.sleep(0.1)


# --- libvirt and QEMU --------------------------------------------------------------------

def domains(prefix: str) -> list[str]:
    """Names of the libvirt domains (running or not) that start with ``prefix``."""
    out = subprocess.run([*VIRSH, "list", "--all", "--name"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in out.stdout.split() if d.startswith(prefix)]


def qemu_pids(prefix: str) -> list[int]:
    """QEMU processes of domains named ``prefix...`` (libvirt passes ``-name guest=NAME``)."""
    out = subprocess.run(["pgrep", "-f", f"guest={prefix}"], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def kill_qemu(domain: str) -> list[int]:
    """kill -9 the QEMU process of ``domain``; the pids killed."""
    pids = qemu_pids(domain)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


def _libvirtd_pids() -> list[int]:
    out = subprocess.run(["pgrep", "-x", "libvirtd"], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def restart_libvirtd(sig: int = signal.SIGTERM) -> None:
    """Stop the system libvirtd with ``sig`` and start it again (``libvirtd -d``, as
    scripts/install-vm-host.sh does); running QEMU domains survive and are re-attached."""
    old = _libvirtd_pids()
    assert old, "no libvirtd runs"
    for pid in old:
        os.kill(pid, sig)
    _wait(lambda: not set(old) & set(_libvirtd_pids()), 30, "libvirtd to exit")
    subprocess.run(["libvirtd", "-d"], check=True, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    _wait(lambda: subprocess.run([*VIRSH, "version"], capture_output=True).returncode == 0,
          60, "libvirtd to answer again")


def _wait(fn: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# --- the server's side -------------------------------------------------------------------

@contextlib.contextmanager
def unreachable(port: int) -> Iterator[None]:
    """Every TCP connection to ``port`` on this machine refused (a reset), both the
    workers' and the guests' (their forwarder connects to the server on loopback)."""
    rule = ["INPUT", "-p", "tcp", "--dport", str(port), "-j", "REJECT",
            "--reject-with", "tcp-reset"]
    subprocess.run(["iptables", "-I", *rule], check=True, timeout=30)
    try:
        yield
    finally:
        subprocess.run(["iptables", "-D", *rule], check=True, timeout=30)


def restart_postgres(pg: PostgresServer) -> None:
    """``pg_ctl restart -m fast``: every connection of the server is cut."""
    [pg_ctl] = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))[-1:]
    cmd = [str(pg_ctl), "-D", str(pg.data), "-l", str(pg.root / "pg.log"), "-m", "fast",
           "-w", "restart"]
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   timeout=120)


# --- a full filesystem -------------------------------------------------------------------

@contextlib.contextmanager
def small_fs(path: Path, size_mb: int) -> Iterator[Path]:
    """A tmpfs of ``size_mb`` MiB mounted at ``path`` (traversable by the QEMU user)."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0711", "tmpfs",
                    str(path)], check=True, timeout=30)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], timeout=60)


def fill(fs: Path, leave: int = 64 * 1024) -> Path:
    """A file taking all but ``leave`` bytes of the filesystem of ``fs``."""
    filler = fs / "filler"
    st = os.statvfs(fs)
    size = st.f_bavail * st.f_frsize - leave
    fd = os.open(filler, os.O_CREAT | os.O_WRONLY, 0o600)
    try:
        os.posix_fallocate(fd, 0, max(size, 1))
    finally:
        os.close(fd)
    return filler


# --- what a job must not leave behind ----------------------------------------------------

def leftovers(work_dir: Path, worker_id: str) -> list[str]:
    """Everything of this worker's VM jobs still there: domains, QEMU processes, VM
    folders, files in vm/ and job folders."""
    prefix = f"xwvm_{worker_id}_"
    found = [f"domain {d}" for d in domains(prefix)]
    found += [f"qemu pid {p}" for p in qemu_pids(prefix)]
    found += [f"folder {p}" for p in work_dir.glob("xwvm_*")]
    vm = work_dir / "vm"
    found += [f"file {p}" for p in vm.rglob("*") if p.is_file()] if vm.is_dir() else []
    jobs = work_dir / "jobs"
    found += [f"job folder {p}" for p in jobs.iterdir()] if jobs.is_dir() else []
    return found
