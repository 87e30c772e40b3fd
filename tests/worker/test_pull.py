"""The outer worker's pull loop reads each job through the protocol's JobDescription."""

from __future__ import annotations

from pathlib import Path

from tests.worker.test_hostile_server import (
    FakeServer,
    _finish,
    _native_job,
    _worker,
    fake,  # noqa: F401  (the fixture)
)


def test_a_malformed_description_is_refused_and_reported(fake: FakeServer,  # noqa: F811
                                                          tmp_path: Path) -> None:
    fake.jobs.append(_native_job(args="rm -rf /"))
    out = _finish(_worker(fake, tmp_path / "w", "--max-jobs", "1"))
    assert [r["status"] for r in fake.reports] == ["ERROR"], out
    message = fake.reports[0]["message"]
    assert "malformed" in message and "job.args" in message, message
    assert "rm -rf" not in message  # the field, never its value
