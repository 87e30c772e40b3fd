"""Operations common to every access-controlled object: lookup by id, chmod."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from xwvm.errors import NotFound
from xwvm.server import events, policy
from xwvm.server.db.models import App, Context, Data, Host, Template, User, UserGroup, Work
from xwvm.server.policy import Principal
from xwvm.server.rights import format_mode, parse_mode
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
    what, obj = find(db, uid)
    policy.check_chmod(p, obj, what)
    old = obj.access_rights
    obj.access_rights = parse_mode(spec, old)
    events.record(db, "chmod", object_uid=obj.uid, actor_uid=p.uid,
                  detail=f"{format_mode(old)} -> {format_mode(obj.access_rights)}")
    return what, obj.access_rights
