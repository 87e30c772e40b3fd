"""The worker's and the nested worker's calls, typed: the answers to a work request (a
host's or a pilot's), a heartbeat and a progress beat, and the body of a job's report.

The server builds each with its constructor and sends ``to_json()``; the worker and the
guest read each answer once with ``from_json``, which checks types as
:mod:`xwvm.protocol.messages` does (errors name the field, never its value). Periods are
the exception: one that is not a number reads as absent, and the reader keeps its own (a
hostile or broken server must not make a worker drop the job it was just given).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from xwvm.protocol import fields as f
from xwvm.protocol.messages import JobDescription
from xwvm.protocol.vocab import EXIT_CODE_MAX, EXIT_CODE_MIN, Fault, JobStatus

#: What a worker (or a pilot's nested worker) may report of a job it holds.
REPORTABLE = (JobStatus.COMPLETED, JobStatus.ERROR, JobStatus.RESULTREQUEST,
              JobStatus.PENDING)


class MalformedJob(ValueError):
    """A work answer whose job does not read as a :class:`JobDescription`. ``uid`` is
    the job's ``uid`` field when it is a string (unchecked: the reader checks it before it
    reports against it), None otherwise."""

    def __init__(self, message: str, uid: str | None) -> None:
        super().__init__(message)
        self.uid = uid


def _period(d: Mapping[str, Any], key: str) -> float | None:
    """A period in seconds; None when absent or not a finite number (an int too large
    for a float, such as 10**400, included: JSON reads it, math.isfinite would raise)."""
    value = d.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return value if math.isfinite(value) else None
    except OverflowError:
        return None


def _job(d: Mapping[str, Any]) -> JobDescription | None:
    raw = d.get("work")
    if raw is None:
        return None
    try:
        return JobDescription.from_json(raw, "job")
    except ValueError as e:
        uid = raw.get("uid") if isinstance(raw, Mapping) else None
        raise MalformedJob(str(e), uid if isinstance(uid, str) else None) from None


@dataclass(frozen=True)
class WorkAnswer:
    """The answer to a worker's request for work (:func:`~xwvm.protocol.paths.host_work`)
    or a pilot's (:func:`~xwvm.protocol.paths.pilot_work`): a job, with the heartbeat
    period while it runs, or none, with how long to wait before asking again."""

    work: JobDescription | None = None
    alive_period: float | None = None
    retry_after: float | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        if self.work is not None:
            doc["work"] = self.work.to_json()
        if self.alive_period is not None:
            doc["alive_period"] = self.alive_period
        if self.retry_after is not None:
            doc["retry_after"] = self.retry_after
        return doc

    @classmethod
    def from_json(cls, doc: Any, where: str = "answer") -> WorkAnswer:
        """Raises :class:`MalformedJob` when the job does not read, ValueError when the
        answer itself is not an object."""
        d = f.document(doc, where)
        return cls(work=_job(d), alive_period=_period(d, "alive_period"),
                   retry_after=_period(d, "retry_after"))


@dataclass(frozen=True)
class HeartbeatAnswer:
    """The answer to a host's heartbeat: the period of the next, and the jobs it must
    stop (no longer this host's: aborted, timed out, reassigned)."""

    alive_period: float | None = None
    stop: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"alive_period": self.alive_period, "stop": list(self.stop)}

    @classmethod
    def from_json(cls, doc: Any, where: str = "heartbeat") -> HeartbeatAnswer:
        d = f.document(doc, where)
        return cls(alive_period=_period(d, "alive_period"), stop=f.str_list(d, "stop", where))


@dataclass(frozen=True)
class ProgressAnswer:
    """The answer to a running job's progress beat: whether to stop it, and its status
    as the server sees it."""

    stop: bool
    status: JobStatus | None = None
    phase: str | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"stop": self.stop,
                               "status": None if self.status is None else str(self.status)}
        if self.phase is not None:
            doc["phase"] = self.phase
        return doc

    @classmethod
    def from_json(cls, doc: Any, where: str = "progress") -> ProgressAnswer:
        d = f.document(doc, where)
        status = f.opt(d, "status", str, where)
        return cls(stop=f.opt(d, "stop", bool, where, False),
                   status=None if status is None
                   else f.choice(d, "status", where, JobStatus, None),
                   phase=f.opt(d, "phase", str, where))


@dataclass(frozen=True)
class Report:
    """A worker's report on a job it holds (:func:`~xwvm.protocol.paths.work_report`):
    one of :data:`REPORTABLE`, the payload's exit code, and why, in words. A job given
    back (PENDING) names the infrastructure :class:`~xwvm.protocol.vocab.Fault` that made
    the worker give it back (None: an older worker, read as HOST)."""

    status: JobStatus
    exit_code: int | None = None
    message: str | None = None
    fault: Fault | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"status": str(self.status), "exit_code": self.exit_code,
                               "message": self.message}
        if self.fault is not None:
            doc["fault"] = str(self.fault)
        return doc

    @classmethod
    def from_json(cls, doc: Any, where: str = "report") -> Report:
        d = f.document(doc, where)
        status = f.choice(d, "status", where, JobStatus, None)
        if status not in REPORTABLE:
            raise ValueError(f"{where}.status: must be one of "
                             f"{', '.join(map(str, REPORTABLE))}")
        exit_code = f.opt(d, "exit_code", int, where)
        if exit_code is not None and not EXIT_CODE_MIN <= exit_code <= EXIT_CODE_MAX:
            raise ValueError(f"{where}.exit_code: must be in [{EXIT_CODE_MIN}, {EXIT_CODE_MAX}]")
        fault = None
        if d.get("fault") is not None:
            fault = f.choice(d, "fault", where, Fault, None)
            if status != JobStatus.PENDING:
                raise ValueError(f"{where}.fault: only a job given back (PENDING) names one")
        return cls(status=status, exit_code=exit_code, message=f.opt(d, "message", str, where),
                   fault=fault)
