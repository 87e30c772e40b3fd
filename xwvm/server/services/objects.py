"""Operations common to every access-controlled object: lookup by id, chmod."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from xwvm.errors import NotFound
from xwvm.server import events, policy
from xwvm.server.db.models import App, Context, Data, Host, Template, User, UserGroup, Work
from xwvm.server.policy import Principal
from xwvm.server.rights import format_mode, parse_mode
from xwvm.server.services import data as data_service
from xwvm.server.services.common import check_uid

KINDS: list[tuple[str, type]] = [("job", Work), ("data", Data), ("app", App), ("user", User),
                                 ("group", UserGroup), ("context", Context),
                                 ("template", Template), ("host", Host)]


def find(db: Session, uid: str) -> tuple[str, policy.OwnedObject]:
    uid = check_uid(uid, "object")
    for what, model in KINDS:
        obj = db.scalars(select(model).where(model.uid == uid)).first()
        if obj is not None:
            return what, obj
    raise NotFound(f"no object with id {uid}", code="unknown_object")


def chmod(db: Session, p: Principal, uid: str, spec: str) -> tuple[str, int]:
    """Change an object's rights; a job's carry to its results and, when they grant
    nothing new, to the inputs uploaded for it (data_service.followers), so that
    ``chmod 700 JOB`` makes the work private and ``chmod 755 JOB`` publishes no input."""
    what, obj = find(db, uid)
    policy.check_chmod(p, obj, what)
    old = obj.access_rights
    new = parse_mode(spec, old)
    following = data_service.followers(db, obj, old, new) if isinstance(obj, Work) else []
    _set_mode(db, p, obj, new)
    for data in following:
        if policy.may_chmod(p, data):
            _set_mode(db, p, data, new, f" (follows job {obj.uid})")
    return what, new


def _set_mode(db: Session, p: Principal, obj: policy.OwnedObject, mode: int,
              why: str = "") -> None:
    old, obj.access_rights = obj.access_rights, mode
    events.record(db, "chmod", object_uid=obj.uid, actor_uid=p.uid,
                  detail=f"{format_mode(old)} -> {format_mode(mode)}{why}")
