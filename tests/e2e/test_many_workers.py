"""4 workers × 200 jobs: every job runs exactly once and every output is right."""

from __future__ import annotations

import tarfile
from collections import Counter
from pathlib import Path

import pytest

from tests.e2e.conftest import make_app, start_workers, stop_all
from tests.support.processes import ServerProcess


@pytest.mark.slow
def test_four_workers_two_hundred_jobs(server: ServerProcess, tmp_path: Path) -> None:
    admin = server.client()
    make_app(admin, tmp_path, "square", 'echo $(( $1 * $1 ))\n')
    jobs = {admin.submit("square", args=[str(i)])["uid"]: i for i in range(200)}
    workers = start_workers(server, admin, tmp_path, 4)
    try:
        done = admin.wait(list(jobs), timeout=400)
    finally:
        stop_all(workers)
    assert Counter(w["status"] for w in done) == {"COMPLETED": 200}
    assert all(w["retries"] == 0 for w in done)
    runs = Counter(e["object"] for e in admin.events() if e["to"] == "RUNNING")
    assert set(runs) == set(jobs) and set(runs.values()) == {1}, "each job ran exactly once"
    hosts = Counter(w["host"] for w in done)
    assert len(hosts) == 4, f"all four workers took jobs: {hosts}"
    for w in done:
        archive = admin.download_result(w["uid"], tmp_path / f"{w['uid']}.tgz")
        with tarfile.open(archive) as tar:
            out = tar.extractfile("stdout.txt").read().decode()  # type: ignore[union-attr]
        assert out == f"{jobs[w['uid']] ** 2}\n"
