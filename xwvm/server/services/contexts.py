"""VM contexts: a user's reusable context document (SSH keys, env, network, hostname, files).

The document is validated with the contextualizer's own JSON Schema (plus the key checks
it makes), so what is stored here is exactly what a worker can later turn into a context
ISO. A job refers to one context by ``Work.context_uid``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from contextualizer import validate_user_context
from xwvm.errors import BadRequest, Conflict
from xwvm.server import events, policy, states
from xwvm.server.db.models import Context, Work
from xwvm.server.policy import Principal
from xwvm.server.rights import PRIVATE
from xwvm.server.services.common import get_or_404


def check_document(document: Any) -> None:
    """Raise 400 listing every problem (``details``: [{path, message}]) of a bad document."""
    issues = validate_user_context(document)
    if issues:
        details = [{"path": i.path, "message": i.message} for i in issues]
        raise BadRequest(f"invalid context document: {issues[0]}"
                         + (f" (and {len(issues) - 1} more)" if len(issues) > 1 else ""),
                         code="invalid_context", details=details)


def create(db: Session, p: Principal, name: str, document: dict[str, Any],
           access_rights: int = PRIVATE) -> Context:
    # A context is data the user supplies: the same level as inserting data.
    policy.require(p, "insert_data")
    check_document(document)
    ctx = Context(name=name, document=document, owner_uid=p.uid, group_uid=p.group_uid,
                  access_rights=access_rights)
    db.add(ctx)
    db.flush()
    events.record(db, "context_created", object_uid=ctx.uid, actor_uid=p.uid, detail=name)
    return ctx


def get_readable(db: Session, p: Principal, uid: str) -> Context:
    ctx = get_or_404(db, Context, uid, "context")
    policy.check(p, ctx, "r", "context")
    return ctx


def list_contexts(db: Session, p: Principal) -> list[Context]:
    policy.require(p, "list")
    rows = db.scalars(select(Context).order_by(Context.created_at)).all()
    return [c for c in rows if policy.allows(p, c, "r")]


def users_of(db: Session, uid: str) -> list[str]:
    """The unfinished jobs that use the context."""
    q = (select(Work.uid).where(Work.context_uid == uid,
                                Work.status.not_in(tuple(states.TERMINAL)))
         .order_by(Work.seq).limit(10))
    return list(db.scalars(q))


def delete(db: Session, p: Principal, uid: str) -> None:
    ctx = get_or_404(db, Context, uid, "context")
    policy.check_delete(p, ctx, "context")
    jobs = users_of(db, ctx.uid)
    if jobs:
        raise Conflict(f"context {ctx.uid} is used by unfinished job(s) "
                       f"{', '.join(jobs)}: abort or remove them first", code="in_use",
                       details={"jobs": jobs})
    db.delete(ctx)
    db.flush()
    events.record(db, "context_deleted", object_uid=ctx.uid, actor_uid=p.uid, detail=ctx.name)
