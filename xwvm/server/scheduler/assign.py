"""Atomic, owner-fair assignment of one pending job to a requesting host.

Fairness: owners with pending jobs are tried in order of their last assignment (least
recently served first), and each owner's oldest matching job is taken; so one user's
100,000 jobs do not starve another user's 10. Within an owner's jobs, VM jobs whose
template image the host already holds come first (no download).

Atomicity: on PostgreSQL rows are taken with ``FOR UPDATE SKIP LOCKED``: one owner
row first (so concurrent requests spread over owners instead of queueing on one owner's
``last_served_at``; only the owner being served is locked), then the job row (so no job
goes to two workers, in any number of server processes). When every owner with pending
jobs is locked by concurrent requests, a second pass takes a job without the owner lock
and leaves ``last_served_at`` to the request that holds it. On SQLite every writing
transaction starts with ``BEGIN IMMEDIATE`` (see db/engine.py), which serializes
assignments.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import case, exists, select, update
from sqlalchemy.orm import Session

from xwvm.server import states
from xwvm.server.db.models import Host, User, Work, utcnow
from xwvm.server.policy import Principal
from xwvm.server.scheduler.matching import conditions

OWNER_PAGE = 32


def _owners_with_pending(db: Session, offset: int) -> list[str]:
    pending = (select(Work.seq).where(Work.owner_uid == User.uid,
                                      Work.status == states.PENDING).limit(1))
    q = (select(User.uid).where(exists(pending))
         .order_by(User.last_served_at.asc().nulls_first(), User.uid)
         .offset(offset).limit(OWNER_PAGE))
    return list(db.scalars(q))


def _lock_owner(db: Session, owner_uid: str) -> bool:
    """Try to lock one owner row (PostgreSQL); False if a concurrent request holds it."""
    q = select(User.uid).where(User.uid == owner_uid).with_for_update(skip_locked=True)
    return db.scalars(q).first() is not None


def _take(db: Session, owner_uid: str, host: Host, worker: Principal) -> Work | None:
    order: list[Any] = [Work.seq]
    if host.templates_held:  # a VM job whose image this host already has comes first
        order.insert(0, case((Work.template_uid.in_(list(host.templates_held)), 0), else_=1))
    q = (select(Work)
         .where(Work.owner_uid == owner_uid, Work.status == states.PENDING,
                *conditions(host, worker))
         .order_by(*order).limit(1)
         .with_for_update(skip_locked=True))
    return db.scalars(q).first()


def assign(db: Session, host: Host, worker: Principal) -> Work | None:
    """Give ``host`` its next job (now RUNNING on it), or None. The caller commits."""
    for owner_locked in (True, False):
        offset = 0
        while True:
            owners = _owners_with_pending(db, offset)
            for owner_uid in owners:
                if owner_locked and not _lock_owner(db, owner_uid):
                    continue
                work = _take(db, owner_uid, host, worker)
                if work is None:
                    continue
                states.move(db, work, states.RUNNING, actor_uid=worker.uid,
                            reason=f"assigned to host {host.uid}", host_uid=host.uid)
                if owner_locked:
                    db.execute(update(User).where(User.uid == owner_uid)
                               .values(last_served_at=utcnow()))
                return work
            if len(owners) < OWNER_PAGE:
                break
            offset += OWNER_PAGE
        if db.get_bind().dialect.name != "postgresql":
            return None  # SQLite: the first pass saw every owner; nothing is locked
    return None
