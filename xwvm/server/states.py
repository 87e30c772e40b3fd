"""The job state graph: the only module that sets a job's status.

PENDING → RUNNING → COMPLETED | ERROR | ABORTED, with WAITING (held by its owner),
DATAREQUEST (inputs not uploaded yet), RESULTREQUEST (the worker finished but could not
upload the results yet, and retries) and LOST (its worker went silent: back to PENDING
with the retry counted, or ERROR once the retries are spent). A job its worker gives back
(an infrastructure fault, or the worker stopping) goes back to PENDING with the retry
counted too: RUNNING → PENDING, or ERROR once the retries are spent.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from xwvm.errors import Conflict
from xwvm.protocol.vocab import TERMINAL_STATUSES, JobStatus
from xwvm.server import events
from xwvm.server.auth import tokens
from xwvm.server.db.models import Work, utcnow

# The vocabulary is the protocol's (workers and clients read it); the transitions are ours.
PENDING, WAITING, DATAREQUEST = JobStatus.PENDING, JobStatus.WAITING, JobStatus.DATAREQUEST
RUNNING, RESULTREQUEST, LOST = JobStatus.RUNNING, JobStatus.RESULTREQUEST, JobStatus.LOST
COMPLETED, ERROR, ABORTED = JobStatus.COMPLETED, JobStatus.ERROR, JobStatus.ABORTED

TERMINAL = TERMINAL_STATUSES
ALL = tuple(JobStatus)

GRAPH: dict[str, frozenset[str]] = {
    DATAREQUEST: frozenset({PENDING, WAITING, ABORTED}),
    PENDING: frozenset({RUNNING, WAITING, ABORTED}),
    WAITING: frozenset({PENDING, DATAREQUEST, ABORTED}),
    RUNNING: frozenset({COMPLETED, ERROR, RESULTREQUEST, LOST, PENDING, ABORTED}),
    RESULTREQUEST: frozenset({COMPLETED, ERROR, LOST, PENDING, ABORTED}),
    LOST: frozenset({PENDING, ERROR}),
    COMPLETED: frozenset(),
    ERROR: frozenset(),
    ABORTED: frozenset(),
}


def can_move(src: str, dst: str) -> bool:
    return dst in GRAPH.get(src, frozenset())


def move(db: Session, work: Work, dst: str, *, actor_uid: str | None, reason: str = "",
         host_uid: str | None = None, pilot_uid: str | None = None) -> None:
    """Validate and apply one transition, and log it. An illegal move is a 409 (the API
    logs every refusal as an event, in its own transaction).

    Who holds a job (its host, and the pilot VM job that took it) is set only by the move
    to RUNNING (``host_uid``, ``pilot_uid``) and cleared by every move back to PENDING, in
    the same transition: a worker's or a pilot's credential acts on the jobs it holds, so
    a holder that outlived a requeue would act on a job now running elsewhere."""
    src = work.status
    if not can_move(src, dst):
        allowed = ", ".join(sorted(GRAPH.get(src, ()))) or "none: it is final"
        raise Conflict(f"job {work.uid} cannot go from {src} to {dst} (allowed: {allowed})",
                       code="illegal_transition",
                       details={"from": src, "to": dst, "allowed": sorted(GRAPH.get(src, ()))})
    now = utcnow()
    work.status = dst
    if dst == RUNNING:
        work.started_at = now
        work.exit_code = None
        work.error_message = None
        work.host_uid, work.pilot_uid = host_uid, pilot_uid
    elif dst == PENDING:
        work.host_uid = work.pilot_uid = None
        work.started_at = None
    elif dst in TERMINAL:
        work.completed_at = now
        if dst in (ERROR, ABORTED) and reason:
            work.error_message = reason
    if src in (RUNNING, RESULTREQUEST) and dst not in (RUNNING, RESULTREQUEST):
        tokens.revoke_scope(db, work.uid)  # the VM job's delegated credential ends with it
        if work.pilot:  # the jobs the pilot VM was running go back to the queue
            for sub in db.scalars(select(Work).where(
                    Work.pilot_uid == work.uid,
                    Work.status.in_((RUNNING, RESULTREQUEST)))).all():
                lose(db, sub, reason=f"its pilot VM job {work.uid} ended ({dst})")
    events.record(db, "transition", object_uid=work.uid, actor_uid=actor_uid,
                  from_status=src, to_status=dst, detail=reason or None)


def lose(db: Session, work: Work, *, reason: str) -> None:
    """The job's worker vanished: LOST, then back to PENDING or ERROR if retries are spent."""
    move(db, work, LOST, actor_uid=None, reason=reason)
    _retry_or_fail(db, work, None, reason, "")


def give_back(db: Session, work: Work, *, reason: str, actor_uid: str | None) -> None:
    """The job's worker gave it back (never the payload's fault): PENDING with the retry
    counted, or ERROR once the retries are spent (the reason says why each time)."""
    _retry_or_fail(db, work, actor_uid, reason, reason)


def _retry_or_fail(db: Session, work: Work, actor_uid: str | None, reason: str,
                   requeued: str) -> None:
    """One more retry: back to PENDING (the move's reason ``requeued``, then the count),
    or ERROR once ``max_retries`` are spent."""
    work.retries += 1
    if work.retries > work.max_retries:
        move(db, work, ERROR, actor_uid=actor_uid,
             reason=f"{reason}; gave up after {work.max_retries} retries")
        return
    count = f"retry {work.retries} of {work.max_retries}"
    move(db, work, PENDING, actor_uid=actor_uid,
         reason=f"{requeued} ({count})" if requeued else count)
