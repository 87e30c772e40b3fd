"""Worker hosts: registration, heartbeats and work requests."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from xwvm.errors import BadRequest, Forbidden
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
from xwvm.server.services.common import get_or_404

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,254}\Z")


def _own_host(db: Session, p: Principal, uid: str) -> Host:
    host = get_or_404(db, Host, uid, "host")
    if host.worker_user_uid != p.uid and p.level < Level.SUPER:
        raise Forbidden(f"host {uid} belongs to another worker account", code="not_your_host")
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
    host = _own_host(db, p, uid)
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
    host = _own_host(db, p, uid)
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
