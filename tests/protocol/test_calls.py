"""The typed answers and bodies of the worker's and the guest's calls."""

from __future__ import annotations

from typing import Any

import pytest

from xwvm.protocol import JobStatus
from xwvm.protocol.calls import (
    HeartbeatAnswer,
    MalformedJob,
    ProgressAnswer,
    Report,
    WorkAnswer,
)
from xwvm.protocol.messages import JobDescription
from xwvm.protocol.vocab import EXIT_CODE_MAX, EXIT_CODE_MIN, Fault

JOB = JobDescription(uid="w1", args=("-v",), app="hello")
EVERY = [(WorkAnswer, WorkAnswer(work=JOB, alive_period=60)),
         (WorkAnswer, WorkAnswer(retry_after=5)), (WorkAnswer, WorkAnswer()),
         (HeartbeatAnswer, HeartbeatAnswer(alive_period=60, stop=("w1", "w2"))),
         (ProgressAnswer, ProgressAnswer(stop=False, status=JobStatus.RUNNING,
                                         phase="running")),
         (ProgressAnswer, ProgressAnswer(stop=True, status=JobStatus.ABORTED)),
         (Report, Report(JobStatus.COMPLETED, 0)),
         (Report, Report(JobStatus.ERROR, None, "why"))]


@pytest.mark.parametrize(("cls", "message"), EVERY)
def test_round_trip_and_a_newer_peers_keys(cls: Any, message: Any) -> None:
    assert cls.from_json(message.to_json()) == message
    assert cls.from_json({**message.to_json(), "from_the_future": 1}) == message


def test_an_idle_answer_has_no_work_key() -> None:
    assert WorkAnswer(retry_after=5).to_json() == {"retry_after": 5}


def test_a_malformed_job_names_its_field_and_keeps_its_uid() -> None:
    with pytest.raises(MalformedJob, match=r"^job\.args: expected an array") as e:
        WorkAnswer.from_json({"work": {**JOB.to_json(), "args": "rm -rf /"}})
    assert e.value.uid == "w1" and "rm -rf" not in str(e.value)
    with pytest.raises(MalformedJob) as e:
        WorkAnswer.from_json({"work": {"uid": 7}})
    assert e.value.uid is None


@pytest.mark.parametrize("period", ["x", None, True, float("nan"), [1]])
def test_a_period_that_is_not_a_number_reads_as_absent(period: Any) -> None:
    assert WorkAnswer.from_json({"retry_after": period}).retry_after is None
    assert HeartbeatAnswer.from_json({"alive_period": period}).alive_period is None


@pytest.mark.parametrize("doc", [[], "stop", {"stop": [1]}, {"stop": "w1"}])
def test_a_malformed_heartbeat_answer_is_refused(doc: Any) -> None:
    with pytest.raises(ValueError):
        HeartbeatAnswer.from_json(doc)


@pytest.mark.parametrize("status", ["BOGUS", "completed", "RUNNING", "ABORTED", None])
def test_a_report_names_a_status_a_worker_may_report(status: Any) -> None:
    with pytest.raises(ValueError, match=r"^report\.status"):
        Report.from_json({"status": status})


def test_a_reports_exit_code_is_a_signed_32_bit_integer() -> None:
    """The same bounds as the exchange disk's verdict and the server's report schema."""
    assert (EXIT_CODE_MIN, EXIT_CODE_MAX) == (-2 ** 31, 2 ** 31 - 1)
    for code in (EXIT_CODE_MIN, 0, EXIT_CODE_MAX):
        assert Report.from_json({"status": "ERROR", "exit_code": code}).exit_code == code
    for code in (EXIT_CODE_MIN - 1, EXIT_CODE_MAX + 1, 10 ** 30):
        with pytest.raises(ValueError, match=r"^report\.exit_code: must be in"):
            Report.from_json({"status": "ERROR", "exit_code": code})


def test_an_unknown_progress_status_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^progress\.status: not a known value"):
        ProgressAnswer.from_json({"stop": False, "status": "SLEEPING"})


def test_a_job_given_back_names_its_fault_and_only_such_a_report_does() -> None:
    back = Report(JobStatus.PENDING, message="broken pipe", fault=Fault.HYPERVISOR)
    assert Report.from_json(back.to_json()) == back
    assert "fault" not in Report(JobStatus.ERROR).to_json()
    assert Report.from_json({"status": "PENDING"}).fault is None  # an older worker
    for bad in ({"status": "PENDING", "fault": "gremlins"},
                {"status": "PENDING", "fault": ["hypervisor"]},
                {"status": "ERROR", "fault": "hypervisor"},
                {"status": "COMPLETED", "fault": "disk_full"}):
        with pytest.raises(ValueError, match=r"report\.fault") as err:
            Report.from_json(bad)
        assert "gremlins" not in str(err.value)
