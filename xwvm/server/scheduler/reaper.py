"""Periodic sweeps: silent workers lose their jobs, over-time jobs end in ERROR.

Any server process may run a sweep; a row in ``maintenance`` is claimed atomically so
that only one process does it per interval (no state in process memory).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from xwvm.protocol import DEFAULT_WALL_CLOCK_S, WALL_CLOCK_GRACE_S
from xwvm.server import events, states
from xwvm.server.db.models import Host, Maintenance, Work, utcnow

#: A host is lost once it missed this many beats: silent for one period more than that
#: (the beat it was sending when it fell silent, then the missed ones), so that a worker
#: cut off for two periods is never lost, whatever the phase of its beats (issue 15).
MISSED_BEATS = 3


def claim(db: Session, name: str, interval_s: float) -> dt.datetime | None:
    """When this caller won the right to run sweep ``name`` now: when it last ran (any
    process); None when another process runs it."""
    now = utcnow()
    row = db.get(Maintenance, name)
    if row is None:
        row = Maintenance(name=name, last_run=now - dt.timedelta(days=1))
        db.add(row)
        db.flush()
    previous = row.last_run
    res = db.execute(update(Maintenance)
                     .where(Maintenance.name == name,
                            Maintenance.last_run <= now - dt.timedelta(seconds=interval_s))
                     .values(last_run=now))
    return previous if res.rowcount == 1 else None


def forgive_outage(db: Session, down_s: float, now: dt.datetime | None = None) -> int:
    """No process swept for ``down_s`` seconds: the server was down (or cut off). A host
    could not be heard meanwhile, so that time is not counted as its silence: each alive
    host's last beat moves forward by the outage (never past now). Without this, a
    server restarted after three heartbeat periods would take every running job away
    from workers that kept them running. The number of hosts forgiven."""
    now = now or utcnow()
    gap = dt.timedelta(seconds=down_s)
    hosts = db.scalars(select(Host).where(Host.status == "alive")).all()
    for host in hosts:
        host.last_seen = min(host.last_seen + gap, now)
    # nor against a running job's wall clock, as the server counts it: a worker that could
    # not deliver meanwhile gives the job back once the server answers, rather than the
    # sweep ending it as the job's own failure
    active = db.scalars(select(Work).where(
        Work.status.in_((states.RUNNING, states.RESULTREQUEST)),
        Work.started_at.is_not(None))).all()
    for work in active:
        assert work.started_at is not None
        work.started_at = min(work.started_at + gap, now)
    events.record(db, "server_back", detail=f"no sweep for {down_s:.0f} s: the silence of "
                                            f"{len(hosts)} hosts meanwhile is not counted, "
                                            f"nor against {len(active)} running jobs")
    return len(hosts)


def lose_host_jobs(db: Session, host: Host, reason: str) -> int:
    works = db.scalars(select(Work).where(Work.host_uid == host.uid,
                                          Work.status.in_((states.RUNNING,
                                                           states.RESULTREQUEST)))
                       .with_for_update()).all()
    for work in works:
        states.lose(db, work, reason=reason)
    return len(works)


def sweep(db: Session, now: dt.datetime | None = None,
          default_wall_clock_s: int = DEFAULT_WALL_CLOCK_S,
          grace_s: int = WALL_CLOCK_GRACE_S) -> dict[str, int]:
    """Run both sweeps once; returns counts for logs and tests. The caller commits.
    A job without a wall-clock limit is held to ``default_wall_clock_s``: none runs
    for ever."""
    now = now or utcnow()
    lost_hosts = lost_jobs = timed_out = 0
    for host in db.scalars(select(Host).where(Host.status == "alive")).all():
        silent_for = (now - host.last_seen).total_seconds()
        if silent_for > (MISSED_BEATS + 1) * host.alive_period:
            host.status = "lost"
            lost_hosts += 1
            events.record(db, "host_lost", object_uid=host.uid,
                          detail=f"no heartbeat for {silent_for:.0f} s")
            lost_jobs += lose_host_jobs(
                db, host, f"worker {host.name} ({host.uid}) stopped sending heartbeats")
    overdue = db.scalars(select(Work).where(
        Work.status.in_((states.RUNNING, states.RESULTREQUEST)),
        Work.started_at.is_not(None))).all()
    for work in overdue:
        assert work.started_at is not None
        wall = work.wall_clock_s or default_wall_clock_s
        if (now - work.started_at).total_seconds() > wall + grace_s:
            states.move(db, work, states.ERROR, actor_uid=None,
                        reason=f"wall-clock limit of {wall} s exceeded")
            timed_out += 1
    return {"lost_hosts": lost_hosts, "lost_jobs": lost_jobs, "timed_out": timed_out}
