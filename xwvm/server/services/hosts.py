"""Worker hosts: registration, heartbeats and work requests."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from xwvm.errors import BadRequest, Conflict, Forbidden, NotFound
from xwvm.protocol.calls import HeartbeatAnswer
from xwvm.protocol.messages import HostFacts, JobDescription
from xwvm.server import events, policy
from xwvm.server.config import WallClock
from xwvm.server.db.models import Host, User, Work, utcnow
from xwvm.server.policy import Principal
from xwvm.server.rights import PUBLIC, Level
from xwvm.server.scheduler import assign as scheduler
from xwvm.server.scheduler import health, reaper
from xwvm.server.services import works as work_service
from xwvm.server.services.common import get_or_404, id_in_ref

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,254}\Z")


def _own_host(db: Session, p: Principal, uid: str) -> Host:
    host = get_or_404(db, Host, uid, "host")
    if host.worker_user_uid != p.uid and p.level < Level.SUPER:
        raise Forbidden(f"host {uid} belongs to another worker account", code="not_your_host")
    return host


def _working_host(db: Session, p: Principal, uid: str) -> Host:
    """The caller's host, unless it was removed: a removed host's worker is told so (it
    stops); restarting it registers the host again."""
    host = _own_host(db, p, uid)
    if host.status == "gone":
        raise Conflict(f"host {host.name} ({host.uid}) was removed from the server: "
                       "restart its worker to register it again", code="host_removed")
    return host


def register(db: Session, p: Principal, facts: HostFacts, alive_period_s: int) -> Host:
    """Register a new host, or re-register a known one (a restarted worker): jobs the
    previous run held are lost and go back to the queue with the retry counted."""
    policy.require(p, "register_host")
    name = facts.name
    if not NAME_RE.match(name):
        raise BadRequest("the host name is not valid", code="bad_name")
    values = dict(name=name, os=facts.os, arch=facts.arch, cpus=facts.cpus,
                  memory_mb=facts.memory_mb, disk_mb=facts.disk_mb,
                  shared_apps=sorted(set(facts.shared_apps)),
                  hypervisors={k: h.to_json() for k, h in facts.hypervisors.items()},
                  version=facts.version, templates_held=sorted(set(facts.templates_held)),
                  status="alive", alive_period=alive_period_s, last_seen=utcnow())
    uid = facts.uid
    host = None
    if uid:
        host = _own_host(db, p, uid)
        reaper.lose_host_jobs(db, host, f"worker {name} restarted")
        for k, v in values.items():
            setattr(host, k, v)
        events.record(db, "host_registered", object_uid=host.uid, actor_uid=p.uid,
                      detail=f"{name} re-registered")
    else:
        account = get_or_404(db, User, p.uid, "user")
        host = Host(worker_user_uid=p.uid, owner_uid=account.owner_uid,
                    group_uid=account.confine_group_uid or account.group_uid,
                    access_rights=PUBLIC, **values)
        db.add(host)
        db.flush()
        events.record(db, "host_registered", object_uid=host.uid, actor_uid=p.uid, detail=name)
    return host


def heartbeat(db: Session, p: Principal, uid: str, running: list[str],
              templates_held: list[str] | None = None) -> HeartbeatAnswer:
    """Mark the host alive and tell it which of its jobs it must stop (aborted, timed out,
    reassigned after it was thought lost)."""
    host = _working_host(db, p, uid)
    host.last_seen = utcnow()
    if templates_held is not None:
        host.templates_held = sorted(set(templates_held))
    if host.status != "alive":
        events.record(db, "host_back", object_uid=host.uid, detail="heartbeat after silence")
        host.status = "alive"
    stop = []
    if running:
        held = set(db.scalars(select(Work.uid).where(
            Work.uid.in_(running), Work.host_uid == host.uid,
            Work.status.in_(policy.ACTIVE_ON_WORKER))))
        stop = sorted(set(running) - held)
    return HeartbeatAnswer(alive_period=host.alive_period, stop=tuple(stop))


def request_work(db: Session, p: Principal, uid: str, secret: bytes,
                 wall: WallClock = WallClock()
                 ) -> JobDescription | float | None:
    """The next job for the host; or, while its circuit breaker is open, the seconds left
    of its pause (no job); None when no job waits for it."""
    policy.require(p, "request_work")
    host = _working_host(db, p, uid)
    host.last_seen = utcnow()
    host.status = "alive"
    paused = health.paused_for(host)
    if paused:
        return paused
    work = scheduler.assign(db, host, p)
    if work is None:
        return None
    if work.template_uid:
        return work_service.vm_description(db, work, secret, wall)
    return work_service.description_for_worker(db, work, wall)


def list_hosts(db: Session, p: Principal) -> list[Host]:
    policy.require(p, "list_hosts")
    rows = db.scalars(select(Host).where(Host.status != "gone").order_by(Host.name))
    return [h for h in rows if policy.allows(p, h, "r")]


def goodbye(db: Session, p: Principal, uid: str) -> Host:
    """A worker that stops cleanly says so: its host is "stopped" (not lost) until its
    next registration. Jobs it still held (it gives them back first) are lost."""
    policy.require(p, "host_goodbye")
    host = _working_host(db, p, uid)
    reaper.lose_host_jobs(db, host, f"worker {host.name} stopped")
    host.status = "stopped"
    host.last_seen = utcnow()
    events.record(db, "host_stopped", object_uid=host.uid, actor_uid=p.uid,
                  detail=f"{host.name} said goodbye")
    return host


def find(db: Session, p: Principal, ref: str) -> Host:
    """A host that is not removed, by id or by name among the hosts ``p`` may read (a
    name two hosts share is an ambiguity: name one by id)."""
    uid = id_in_ref(ref, "host")
    q = select(Host).where(Host.status != "gone")
    rows = db.scalars(q.where(Host.uid == uid) if uid else q.where(Host.name == ref)).all()
    if uid is None:
        rows = [h for h in rows if policy.allows(p, h, "r")]
    if not rows:
        raise NotFound(f"no host {ref}", code="unknown_host")
    if len(rows) > 1:
        raise Conflict(f"{len(rows)} hosts are named {ref}: name one by id ("
                       + ", ".join(sorted(h.uid for h in rows)) + ")", code="ambiguous_name")
    return rows[0]


def remove(db: Session, p: Principal, ref: str) -> Host:
    """Remove a host (its owner, an admin of its group, a super user): the jobs it runs
    are lost (back to the queue, the retry counted), and it is "gone": unlisted, its
    worker refused until it registers again."""
    policy.require(p, "remove_host")
    host = find(db, p, ref)
    policy.check_delete(p, host, "host")
    retire(db, host, p.uid, f"host {host.name} removed by {p.login}")
    return host


def retire(db: Session, host: Host, actor_uid: str | None, why: str) -> int:
    """Mark ``host`` gone and lose its jobs; the number of jobs lost."""
    lost = reaper.lose_host_jobs(db, host, why)
    host.status = "gone"
    events.record(db, "host_removed", object_uid=host.uid, actor_uid=actor_uid,
                  detail=f"{why}; {lost} running jobs lost")
    return lost
