"""Infrastructure faults at each step of a VM job's life, with real processes and real VMs
(issue 15): whatever breaks, the job ends COMPLETED exactly once with its results, its
retries say how often it was given back or lost, the events tell the story, and no
domain, QEMU process, file or data row is left behind.

Not the full faults × steps matrix: each fault is injected at the steps where it matters
(every fault at two steps or more, every step under two faults or more). QEMU lives only
from the 'running' step on (domains are defined, then started, and off by 'upload'), so
it is killed there twice: as the guest boots and while its payload runs. Faults of one
worker run side by side; a fault of what all workers share (libvirtd, the server,
PostgreSQL) is injected once, with one worker paused at each of its steps."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.harness import (
    Case,
    FaultGrid,
    one_worker_case,
    parallel,
    server_left_clean,
    shared_fault_cases,
)
from xwvm.worker.faults import STEPS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

ONE_WORKER_FAULTS = [
    Case("qemu", "running"),
    Case("qemu", "running", mid_payload=True),
    Case("disk_full", "download"),
    Case("disk_full", "overlay"),
]
KILLED_WORKER = [Case("worker", step) for step in ("overlay", "define", "running", "destroy")]
SHARED_FAULTS = {
    "libvirtd": [Case("libvirtd", s) for s in ("define", "boot", "running", "destroy")],
    "server": [Case("server", "download"), Case("server", "running"),
               Case("server", "upload", network="none")],
    "unreachable": [Case("unreachable", "boot"), Case("unreachable", "running"),
                    Case("unreachable", "upload", network="none")],
    "postgres": [Case("postgres", "download"), Case("postgres", "running"),
                 Case("postgres", "upload", network="none")],
}


def test_the_table_covers_every_fault_and_step_twice() -> None:
    cases = ONE_WORKER_FAULTS + KILLED_WORKER + [c for cs in SHARED_FAULTS.values() for c in cs]
    for fault in {c.fault for c in cases}:
        assert len({(c.step, c.mid_payload) for c in cases if c.fault == fault}) >= 2, fault
    for step in STEPS:
        assert len({c.fault for c in cases if c.step == step}) >= 2, step
    assert len({c.fault for c in cases}) == 7


def test_qemu_killed_or_disk_full_gives_the_job_back_once(grid: FaultGrid,
                                                          tmp_path: Path) -> None:
    """QEMU kill -9 → given back (vm_crashed); a full work dir → given back (disk_full),
    no job taken while it is full; each runs again on the same worker: retries 1."""
    with server_left_clean(grid):
        parallel(lambda c: one_worker_case(grid, c, tmp_path), ONE_WORKER_FAULTS,
                 lambda c: c.name)


def test_killed_worker_restarted_loses_the_job_once(grid: FaultGrid, tmp_path: Path) -> None:
    """Worker kill -9 and restart: it re-registers, the job it held is lost (retries 1)
    and runs again; what the killed worker left (VM, files) is cleaned up."""
    with server_left_clean(grid):
        parallel(lambda c: one_worker_case(grid, c, tmp_path), KILLED_WORKER,
                 lambda c: c.name)


@pytest.mark.parametrize("fault", sorted(SHARED_FAULTS))
def test_shared_fault_is_ridden_out(grid: FaultGrid, tmp_path: Path, fault: str) -> None:
    """libvirtd restarted (kill -9), the server killed and restarted, unreachable for two
    heartbeat periods, PostgreSQL restarted: ridden out, retries 0."""
    with server_left_clean(grid):
        shared_fault_cases(grid, fault, SHARED_FAULTS[fault], tmp_path)
