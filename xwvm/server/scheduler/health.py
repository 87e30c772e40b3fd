"""A host's health: the circuit breaker that stops a worker that keeps failing from taking
jobs.

Each job a worker gives back for an infrastructure fault (not for stopping) adds one to
its host's fault streak; a job that ran (COMPLETED, or ERROR for the payload's own reason)
resets it. From ``faults_to_pause`` faults in a row the host is paused: its work requests
get no job until ``paused_until``, ``first_pause_s`` the first time, doubling with each
further fault, at most ``max_pause_s`` (HTCondor's and BOINC's back-off of a failing
host, with the state in the database so that every server process agrees). Each opening
and closing of the breaker is an event, and the host record shows the streak, the last
fault and the pause.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy.orm import Session

from xwvm.protocol.vocab import MAX_MESSAGE, Fault
from xwvm.server import events
from xwvm.server.db.models import Host, utcnow

#: Faults that say nothing about the host's health.
NOT_THE_HOSTS = frozenset({Fault.STOPPING, Fault.REFUSED, Fault.SERVER, Fault.IMAGE})


@dataclass(frozen=True)
class Breaker:
    faults_to_pause: int = 3
    first_pause_s: int = 60
    max_pause_s: int = 3600

    def pause_s(self, streak: int) -> int:
        """How long a host with ``streak`` faults in a row is paused (0: not paused)."""
        if streak < self.faults_to_pause:
            return 0
        doublings = min(streak - self.faults_to_pause, 30)
        return min(self.first_pause_s * 2**doublings, self.max_pause_s)


def note_fault(db: Session, host: Host, fault: Fault, message: str,
               breaker: Breaker) -> None:
    """One more infrastructure fault on ``host``. A worker stopping, or refusing a job it
    may not run, is not one; nor is the server's own failure (unreachable, its blob store
    full, a template it could not serve): that would pause every busy host at once."""
    if fault in NOT_THE_HOSTS:
        return
    host.fault_streak = (host.fault_streak or 0) + 1
    host.last_fault = f"{fault}: {message}"[:MAX_MESSAGE]
    pause = breaker.pause_s(host.fault_streak)
    if pause:
        host.paused_until = utcnow() + dt.timedelta(seconds=pause)
        events.record(db, "host_paused", object_uid=host.uid,
                      detail=f"{host.fault_streak} infrastructure faults in a row (last: "
                             f"{fault}); no job for {pause} s")


def note_success(db: Session, host: Host) -> None:
    """A job ran on ``host``: its streak ends, and its breaker closes."""
    if not host.fault_streak and host.paused_until is None:
        return
    events.record(db, "host_healthy", object_uid=host.uid,
                  detail=f"a job ran after {host.fault_streak} infrastructure faults")
    host.fault_streak = 0
    host.paused_until = None


def paused_for(host: Host, now: dt.datetime | None = None) -> float:
    """Seconds left of the host's pause (0: it may take jobs)."""
    if host.paused_until is None:
        return 0.0
    return max(0.0, (host.paused_until - (now or utcnow())).total_seconds())
