"""The fault suite's cases: one short VM job, a real worker paused at one step of the
job's life (xwvm/worker/faults.py ``step``), a real fault injected there, and what must
hold afterwards: the job COMPLETED once with its results, its retries counted, the events
telling the story, and nothing left behind on the worker or the server."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import requests

from tests.support import faults
from tests.support.faults import FaultWorker
from tests.support.postgres import PostgresServer
from tests.support.processes import ServerProcess
from xwvm.client.sdk import ApiError, Client
from xwvm.protocol.vocab import TERMINAL_STATUSES, Fault
from xwvm.worker.credential import Credential
from xwvm.worker.faults import STEPS

COMMAND = "sleep 3; echo done"
LONG_COMMAND = "sleep 25; echo done"  # long enough to kill its QEMU mid-payload
JOB_TIMEOUT_S = 420
DISK_FS_MB = 2600  # the worker's VM disk ceiling is its free space: the 2 GiB template fits
DISK_FULL_HOLD_S = 8  # how long the disk stays full after the give-back
# the faults, by the short names their workers get
CODES = {"libvirtd": "lvd", "qemu": "qemu", "worker": "wkr", "server": "srv",
         "unreachable": "net", "disk_full": "disk", "postgres": "pg"}
T = TypeVar("T")
R = TypeVar("R")


class PatientClient(Client):
    """The admin's client, which waits out the server's 503 "retry later" on reads, as a
    careful user's would: after PostgreSQL restarts, each of the server's pooled
    connections fails its next request once (engine.py: no pre-ping, by choice)."""

    def request(self, method: str, path: str, **kw: Any) -> requests.Response:
        deadline = time.monotonic() + 30
        while True:
            try:
                return super().request(method, path, **kw)
            except ApiError as e:
                if method != "GET" or e.status != 503 or time.monotonic() > deadline:
                    raise
            time.sleep(0.5)


@dataclass
class FaultGrid:
    server: ServerProcess
    admin: Client
    root: Path
    public_key: Path
    pg: PostgresServer


@dataclass(frozen=True)
class Case:
    """``fault`` injected while the worker is paused at ``step``; ``mid_payload``: once
    resumed, when the guest's payload runs (the nested worker's first beat)."""

    fault: str
    step: str
    network: str = "server"
    mid_payload: bool = False

    @property
    def name(self) -> str:
        """Short: it names the worker's work dir, and a VM's forwarder socket path under
        it must fit in 107 bytes."""
        return f"{CODES[self.fault]}-{self.step}{'-p' if self.mid_payload else ''}"

    @property
    def command(self) -> str:
        return LONG_COMMAND if self.mid_payload else COMMAND


@dataclass(frozen=True)
class Expect:
    statuses: tuple[str, ...]  # the job's transitions, in order
    retries: int
    named: tuple[str, ...] = ()  # the event that gave the job back (or lost it) names one


RIDE_OUT = Expect(("PENDING", "RUNNING", "COMPLETED"), 0)
EXPECT = {
    "libvirtd": RIDE_OUT, "server": RIDE_OUT, "unreachable": RIDE_OUT, "postgres": RIDE_OUT,
    "qemu": Expect(("PENDING", "RUNNING", "PENDING", "RUNNING", "COMPLETED"), 1,
                   (str(Fault.VM_CRASHED),)),
    "disk_full": Expect(("PENDING", "RUNNING", "PENDING", "RUNNING", "COMPLETED"), 1,
                        (str(Fault.DISK_FULL),)),
    # lost when the restarted worker registers again, or by the reaper if it is slower
    # than three heartbeat periods
    "worker": Expect(("PENDING", "RUNNING", "LOST", "PENDING", "RUNNING", "COMPLETED"), 1,
                     ("restarted", "stopped sending heartbeats")),
}


@dataclass
class Run:
    case: Case
    workers: list[FaultWorker]  # the case's worker, then each restart of it
    host: str = ""
    uid: str = ""
    started: float = field(default_factory=time.monotonic)
    seconds: float = 0.0

    @property
    def worker(self) -> FaultWorker:
        return self.workers[-1]

    def stop(self) -> None:
        for w in self.workers:
            # a worker paused at a fail point does not stop on SIGTERM: stop() kills it
            with contextlib.suppress(subprocess.TimeoutExpired):
                w.stop(timeout=10)


def start_run(grid: FaultGrid, case: Case, work_dir: Path, runs: list[Run]) -> Run:
    """A fresh worker that pauses at the case's step, and its job (pinned to it); the run
    joins ``runs`` as soon as its worker starts (for the caller to stop)."""
    cred = grid.admin.enroll_worker()
    path = grid.root / f"{case.name}.cred"
    Credential(server=grid.server.url, login=cred["login"], password=cred["password"],
               ca_pem=grid.server.ca.read_text()).save(path)
    worker = FaultWorker(grid.root, path, case.name,
                         ["--hypervisor", "libvirt", "--trusted-key", str(grid.public_key),
                          "--vm-hang-timeout", "180"], failpoints=case.step)
    worker.work_dir = work_dir
    run = Run(case, [worker.start()])
    runs.append(run)
    run.host = _eventually(lambda: next((h["uid"] for h in grid.admin.list_hosts()
                                         if h["name"] == case.name), None),
                           240, f"worker {case.name} to register", worker)
    job = grid.admin.submit(template="base", command=case.command, network=case.network,
                            expected_host=run.host, wall_clock_s=600, max_retries=3)
    run.uid = job["uid"]
    return run


def _eventually(fn: Callable[[], T | None], timeout: float, what: str,
                worker: FaultWorker | None = None) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.3)
    tail = f"; worker log tail:\n{worker.log[-3000:]}" if worker else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}{tail}")


def pause(run: Run) -> None:
    uid = run.worker.paused(run.case.step)
    assert uid == run.uid, f"{run.case.name}: paused with job {uid}, not {run.uid}"


@contextlib.contextmanager
def work_dir_for(grid: FaultGrid, case: Case) -> Iterator[Path]:
    """The case's work dir: a small tmpfs of its own for a full-disk case."""
    path = grid.root / case.name
    if case.fault != "disk_full":
        yield path
        return
    with faults.small_fs(path, DISK_FS_MB):
        yield path


def parallel(fn: Callable[[T], R], items: Iterable[T], what: Callable[[T], str]) -> list[R]:
    """``fn`` on every item at once, in threads; every failure is reported, each under
    its item's name."""
    items = list(items)
    with ThreadPoolExecutor(max_workers=max(len(items), 1)) as pool:
        futures = [(what(i), pool.submit(fn, i)) for i in items]
    failed = [f"--- {name}: {type(fut.exception()).__name__}: {fut.exception()}"
              for name, fut in futures if fut.exception() is not None]
    assert not failed, f"{len(failed)} of {len(items)} failed:\n" + "\n".join(failed)
    return [fut.result() for _, fut in futures]


# --- faults of one worker's job ----------------------------------------------------------

def kill_qemu(grid: FaultGrid, run: Run) -> None:
    if run.case.mid_payload:
        run.worker.resume(run.case.step)
        _eventually(lambda: grid.admin.get_work(run.uid)["nested_seen_at"], 240,
                    "the payload to start (the nested worker's first beat)", run.worker)
    domain = f"xwvm_{run.worker.worker_id}_{run.uid}"
    killed = faults.kill_qemu(domain)
    assert killed, f"no QEMU process of {domain} to kill"
    run.worker.resume(run.case.step)


def kill_worker(grid: FaultGrid, run: Run) -> None:
    """kill -9, then the same worker again (without fail points): it re-registers, which
    loses the job it held, and cleans up what the killed one left."""
    run.worker.stop(signal.SIGKILL)
    run.worker.marker(run.case.step).unlink(missing_ok=True)
    run.workers.append(run.worker.restarted())


def fill_disk(grid: FaultGrid, run: Run) -> None:
    """Fill the work dir's filesystem at the step; the job must be given back and not
    taken again while the disk is full; then free the space."""
    filler = faults.fill(run.worker.work_dir)
    run.worker.resume(run.case.step)
    _eventually(lambda: grid.admin.get_work(run.uid)["retries"] >= 1, 180,
                "the job to be given back for a full disk", run.worker)
    time.sleep(DISK_FULL_HOLD_S)
    work = grid.admin.get_work(run.uid)
    assert work["status"] == "PENDING" and work["retries"] == 1, \
        f"{run.case.name}: taken again while the disk was full: {_brief(work)}"
    filler.unlink()


ONE_WORKER: dict[str, Callable[[FaultGrid, Run], None]] = {
    "qemu": kill_qemu, "worker": kill_worker, "disk_full": fill_disk}


def one_worker_case(grid: FaultGrid, case: Case, tmp: Path) -> None:
    """One worker, its job paused at the step, the fault, then the checks."""
    runs: list[Run] = []
    with work_dir_for(grid, case) as work_dir:
        try:
            run = start_run(grid, case, work_dir, runs)
            pause(run)
            ONE_WORKER[case.fault](grid, run)
            finish(grid, run, tmp)
        finally:
            for r in runs:
                r.stop()


# --- faults of everything the workers depend on ------------------------------------------

def restart_server(grid: FaultGrid) -> None:
    grid.server.stop(signal.SIGKILL)
    grid.server.start()


def cut_server_off(grid: FaultGrid) -> None:
    with faults.unreachable(grid.server.port):
        time.sleep(2 * grid.server.alive_period)


SHARED: dict[str, Callable[[FaultGrid], None]] = {
    "libvirtd": lambda grid: faults.restart_libvirtd(signal.SIGKILL),
    "server": restart_server, "unreachable": cut_server_off,
    "postgres": lambda grid: faults.restart_postgres(grid.pg)}


def shared_fault_cases(grid: FaultGrid, fault: str, cases: list[Case], tmp: Path) -> None:
    """One worker per case, each paused at its step (the later steps first, so that a VM
    paused at 'running' is still running), then the fault once, for all of them."""
    late = [c for c in cases if STEPS.index(c.step) > STEPS.index("running")]
    runs: list[Run] = []
    try:
        for stage in (late, [c for c in cases if c not in late]):
            new = parallel(lambda c: start_run(grid, c, grid.root / c.name, runs), stage,
                           lambda c: c.name)
            parallel(pause, new, lambda r: r.case.name)
        SHARED[fault](grid)
        for run in runs:
            run.worker.resume(run.case.step)
        parallel(lambda r: finish(grid, r, tmp), runs, lambda r: r.case.name)
    finally:
        for run in runs:
            run.stop()


# --- what must hold afterwards -----------------------------------------------------------

def finish(grid: FaultGrid, run: Run, tmp: Path) -> None:
    """Wait for the job and check everything: status, retries, events, results, leftovers.
    The worker's log is kept beside the test's files."""
    done = _eventually(lambda: _ended(grid.admin.get_work(run.uid)), JOB_TIMEOUT_S,
                       f"job {run.uid} to end", run.worker)
    run.seconds = time.monotonic() - run.started
    expect, name = EXPECT[run.case.fault], run.case.name
    log = tmp / f"{name}.log"
    log.write_text(run.worker.log)
    story = [(e["from"], e["to"], e["detail"]) for e in grid.admin.events(run.uid)
             if e["kind"] == "transition"]
    where = f"{name}: {_brief(done)}\nevents: {story}\nworker log: {log}"
    assert done["status"] == "COMPLETED" and done["exit_code"] == 0, where
    assert done["retries"] == expect.retries, f"retries, expected {expect.retries}: {where}"
    assert tuple(to for _, to, _ in story) == expect.statuses, \
        f"transitions, expected {expect.statuses}: {where}"
    if expect.named:  # the give-back (RUNNING→PENDING) or the loss (RUNNING→LOST)
        assert any(n in (story[2][2] or "") for n in expect.named), \
            f"the 3rd event names none of {expect.named}: {where}"
    files = results(grid.admin, run.uid, tmp)
    assert files.get("stdout.txt") == "done\n", f"results {files}: {where}"
    left = _eventually_none(lambda: faults.leftovers(run.worker.work_dir,
                                                     run.worker.worker_id), 60)
    assert not left, f"left behind: {left}: {where}"
    print(f"fault case {name}: COMPLETED, retries {done['retries']}, {run.seconds:.0f} s; "
          f"{' → '.join(f'{to} ({why})' for _, to, why in story[1:-1])}")


def _ended(work: dict[str, Any]) -> dict[str, Any] | None:
    return work if work["status"] in TERMINAL_STATUSES else None


def _eventually_none(fn: Callable[[], list[str]], timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    found = fn()
    while found and time.monotonic() < deadline:
        time.sleep(0.5)
        found = fn()
    return found


def results(admin: Client, uid: str, dest: Path) -> dict[str, str]:
    archive = admin.download_result(uid, dest / f"{uid}.tgz")
    with tarfile.open(archive) as tar:
        return {m.name: tar.extractfile(m).read().decode()  # type: ignore[union-attr]
                for m in tar.getmembers() if m.isfile()}


def _brief(work: dict[str, Any]) -> str:
    keys = ("uid", "status", "retries", "exit_code", "error", "host")
    return str({k: work.get(k) for k in keys})


@contextlib.contextmanager
def server_left_clean(grid: FaultGrid) -> Iterator[None]:
    """No job left RUNNING, and no data row beyond the jobs' results, once the block ends."""
    before = {d["uid"] for d in grid.admin.list_data()}
    earlier = {w["uid"] for w in grid.admin.list_works()}
    yield
    works = [w for w in grid.admin.list_works() if w["uid"] not in earlier]
    assert not [w for w in works if w["status"] not in ("COMPLETED", "ERROR", "ABORTED")], \
        [_brief(w) for w in works]
    new = {d["uid"] for d in grid.admin.list_data()} - before
    assert new == {w["result"] for w in works}, \
        f"data rows {sorted(new)}, the jobs' results {sorted(w['result'] for w in works)}"
