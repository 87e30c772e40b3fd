"""Every permission decision of the server: rights levels per operation and object access rights."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from xwvm.errors import Conflict, Forbidden
from xwvm.protocol.vocab import JobStatus
from xwvm.server.db.models import Host, Work, WorkData
from xwvm.server.rights import STICKY, Level

Mode = Literal["r", "w", "x"]
_SHIFT = {"r": 2, "w": 1, "x": 0}

# Jobs in these states are "held" by a worker: it may update them and read their data.
ACTIVE_ON_WORKER = (JobStatus.RUNNING, JobStatus.RESULTREQUEST)


@dataclass(frozen=True)
class Principal:
    """Who makes a request, as the token and the user row say."""

    uid: str
    login: str
    level: Level
    group_uid: str | None
    confine_user_uid: str | None = None
    confine_group_uid: str | None = None
    token_jti: str | None = None
    # A nested worker's delegated credential acts for the owner on this VM job only.
    scope_work_uid: str | None = None

    @property
    def is_worker(self) -> bool:
        return self.level in (Level.WORKER, Level.VWORKER)

    @property
    def is_delegated(self) -> bool:
        return self.scope_work_uid is not None


class OwnedObject(Protocol):
    uid: str
    owner_uid: str
    group_uid: str | None
    access_rights: int


# Operations that are not about one object: the minimum level, and whether worker
# accounts (whose powers are narrow, not merely lower) may do them.
_OPERATIONS: dict[str, tuple[Level, bool]] = {
    "list": (Level.STANDARD, False),
    "insert_data": (Level.STANDARD, False),
    "insert_work": (Level.STANDARD, False),
    "insert_app": (Level.GROUP_ADMIN, False),
    "insert_user": (Level.GROUP_ADMIN, False),
    "insert_group": (Level.SUPER, False),
    "enroll_worker": (Level.STANDARD, False),
    "chmod": (Level.STANDARD, False),
    "register_host": (Level.WORKER, True),
    "request_work": (Level.WORKER, True),
    "list_hosts": (Level.STANDARD, False),
    "read_events": (Level.STANDARD, False),
    "insert_template": (Level.GROUP_ADMIN, False),
    "upload_blob": (Level.GROUP_ADMIN, False),  # resumable uploads feed templates
    "manage_certs": (Level.SUPER, False),  # client certificates of the server CA
    # Removals (issue 23): a host by whoever may write it (its owner, an admin of its
    # group, a super user); a user by who may create one like it; a usergroup by a super
    # user. A worker says goodbye for its own host.
    "remove_host": (Level.STANDARD, False),
    "remove_user": (Level.GROUP_ADMIN, False),
    "remove_group": (Level.SUPER, False),
    "host_goodbye": (Level.WORKER, True),
}


def require(p: Principal, operation: str) -> None:
    """Refuse ``operation`` unless the principal's rights level allows it."""
    minimum, workers_allowed = _OPERATIONS[operation]
    if p.is_delegated:
        raise Forbidden(f"a delegated VM credential may not {operation.replace('_', ' ')}",
                        code="forbidden_delegated")
    if p.is_worker and not workers_allowed:
        raise Forbidden(f"a worker account may not {operation.replace('_', ' ')}",
                        code="forbidden_level")
    if not p.is_worker and workers_allowed and p.level < Level.SUPER:
        raise Forbidden(f"{operation.replace('_', ' ')} needs a worker account",
                        code="forbidden_level")
    if p.level < minimum:
        raise Forbidden(f"{operation.replace('_', ' ')} needs rights level "
                        f"{minimum.label} or higher (you are {p.level.label})",
                        code="forbidden_level")


def allows(p: Principal, obj: OwnedObject, mode: Mode) -> bool:
    """Unix-like check: owner, then group, then other bits; super users pass."""
    if p.level >= Level.SUPER:
        return True
    if p.is_worker:
        return False  # workers get object access only through the jobs they hold
    bit = 1 << _SHIFT[mode]
    if obj.owner_uid == p.uid:
        return bool(obj.access_rights & (bit << 6))
    if same_group(obj.group_uid, p.group_uid):
        if p.level >= Level.GROUP_ADMIN:
            return True
        return bool(obj.access_rights & (bit << 3))
    return bool(obj.access_rights & bit)


def same_group(a: str | None, b: str | None) -> bool:
    """Two parties share a group only when both have one: absent groups never match, so a
    group admin without a group administers nothing (``None == None`` grants nothing)."""
    return a is not None and a == b


def check(p: Principal, obj: OwnedObject, mode: Mode, what: str) -> None:
    if not allows(p, obj, mode):
        word = {"r": "read", "w": "write", "x": "execute"}[mode]
        raise Forbidden(f"no {word} access to {what} {obj.uid}", code="forbidden_access")


def check_delete(p: Principal, obj: OwnedObject, what: str) -> None:
    """Write access, and with the sticky bit set only the owner (or a super user) deletes."""
    check(p, obj, "w", what)
    if obj.access_rights & STICKY and obj.owner_uid != p.uid and p.level < Level.SUPER:
        raise Forbidden(f"{what} {obj.uid} is sticky: only its owner may remove it",
                        code="forbidden_sticky")


def may_chmod(p: Principal, obj: OwnedObject) -> bool:
    """The owner, a super user, or an admin of the object's group (which it must have)."""
    return (obj.owner_uid == p.uid or p.level >= Level.SUPER
            or (p.level >= Level.GROUP_ADMIN and same_group(obj.group_uid, p.group_uid)))


def check_chmod(p: Principal, obj: OwnedObject, what: str) -> None:
    require(p, "chmod")
    if not may_chmod(p, obj):
        raise Forbidden(f"only the owner of {what} {obj.uid} may change its access rights",
                        code="forbidden_access")


def check_worker_holds(db: Session, p: Principal, work: Work) -> None:
    """A worker account may act only on the jobs assigned to one of its hosts; a delegated
    credential only on its own VM job, or the jobs its pilot VM took, while they run."""
    if p.level >= Level.SUPER:
        return
    if p.is_delegated:
        if p.scope_work_uid not in (work.uid, work.pilot_uid):
            raise Forbidden(f"this credential was delegated for another job, not {work.uid}",
                            code="forbidden_delegated")
        if work.status not in ACTIVE_ON_WORKER:
            raise Conflict(f"job {work.uid} is {work.status}; its VM credential has ended",
                           code="not_active", details={"status": work.status})
        return
    host = db.get(Host, work.host_uid) if work.host_uid else None
    if not p.is_worker or host is None or host.worker_user_uid != p.uid:
        raise Forbidden(f"job {work.uid} is not running on one of your hosts",
                        code="forbidden_not_assigned")
    if work.status not in ACTIVE_ON_WORKER:
        raise Conflict(f"job {work.uid} is {work.status} and no longer yours to update",
                       code="not_active", details={"status": work.status})


def worker_may_read_data(db: Session, p: Principal, data_uid: str) -> bool:
    """True when a job held by one of this worker's hosts reads the data."""
    q = (select(WorkData.data_uid)
         .join(Work, Work.uid == WorkData.work_uid)
         .join(Host, Host.uid == Work.host_uid)
         .where(WorkData.data_uid == data_uid, Host.worker_user_uid == p.uid,
                Work.status.in_(ACTIVE_ON_WORKER))
         .limit(1))
    return db.execute(q).first() is not None


def delegated_may_read_data(db: Session, p: Principal, data_uid: str) -> bool:
    q = (select(WorkData.data_uid).join(Work, Work.uid == WorkData.work_uid)
         .where(WorkData.data_uid == data_uid,
                or_(Work.uid == p.scope_work_uid, Work.pilot_uid == p.scope_work_uid),
                Work.status.in_(ACTIVE_ON_WORKER)).limit(1))
    return db.execute(q).first() is not None


def check_data_read(db: Session, p: Principal, data: OwnedObject) -> None:
    if p.is_delegated:
        if not delegated_may_read_data(db, p, data.uid):
            raise Forbidden(f"data {data.uid} is not an input of this VM job",
                            code="forbidden_delegated")
        return
    if p.is_worker and p.level < Level.SUPER:
        if not worker_may_read_data(db, p, data.uid):
            raise Forbidden(f"data {data.uid} is not needed by a job on your hosts",
                            code="forbidden_not_assigned")
        return
    check(p, data, "r", "data")


def worker_may_read_template(db: Session, p: Principal, template_uid: str) -> bool:
    """True when a job held by one of this worker's hosts boots the template."""
    q = (select(Work.uid)
         .join(Host, Host.uid == Work.host_uid)
         .where(Work.template_uid == template_uid, Host.worker_user_uid == p.uid,
                Work.status.in_(ACTIVE_ON_WORKER))
         .limit(1))
    return db.execute(q).first() is not None


def check_template_read(db: Session, p: Principal, template: OwnedObject) -> None:
    if p.is_worker and p.level < Level.SUPER:
        if not worker_may_read_template(db, p, template.uid):
            raise Forbidden(f"template {template.uid} is not used by a job on your hosts",
                            code="forbidden_not_assigned")
        return
    check(p, template, "r", "template")


# Name trust tiers (issue 12, hole 7): a name means the object of the lowest tier that has
# one; two owners in one tier is an ambiguity. The administrators count as one publisher.
NAME_OWN, NAME_GROUP, NAME_ADMIN = 0, 1, 2


def name_trust(p: Principal, obj: OwnedObject, owner_level: Level) -> int | None:
    """How far ``p`` trusts a visible ``obj`` to answer to its name: its own, its group's,
    or a super user's (whose owner has ``owner_level``); None: only its id names it to
    ``p``. An absent group matches nothing."""
    if obj.owner_uid == p.uid:
        return NAME_OWN
    if same_group(obj.group_uid, p.group_uid):
        return NAME_GROUP
    if owner_level >= Level.SUPER:
        return NAME_ADMIN
    return None


def manage_user_allowed(p: Principal, target_group_uid: str | None, level: Level) -> bool:
    """Super users manage anyone; group admins manage their group's users below them."""
    if p.level >= Level.SUPER:
        return True
    return (p.level >= Level.GROUP_ADMIN and same_group(target_group_uid, p.group_uid)
            and level < Level.GROUP_ADMIN)


def check_group_admin(p: Principal, group_uid: str, name: str) -> None:
    """Super users, and admins of this usergroup, act for the group (enroll its workers)."""
    if p.level < Level.SUPER and not (p.level >= Level.GROUP_ADMIN
                                      and same_group(group_uid, p.group_uid)):
        raise Forbidden("only an admin of that usergroup may enroll its workers",
                        code="forbidden_level")


def worker_confinement(p: Principal, group_uid: str | None,
                       public: bool) -> tuple[str | None, str | None]:
    """(confine_user_uid, confine_group_uid) of a worker account ``p`` creates in
    ``group_uid``. Matching treats an unconfined worker as public, so every worker account
    is confined, to its group or else to its creator, unless a super user makes it public."""
    if public:
        if p.level < Level.SUPER:
            raise Forbidden("only a super user may make a worker account public",
                            code="forbidden_level")
        return None, None
    if group_uid is not None:
        return None, group_uid
    return p.uid, None
