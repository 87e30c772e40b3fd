"""The append-only event log: every state move and every refused request."""

from __future__ import annotations

from sqlalchemy.orm import Session

from xwvm.server.db.models import Event


def record(db: Session, kind: str, *, object_uid: str | None = None,
           actor_uid: str | None = None, from_status: str | None = None,
           to_status: str | None = None, detail: str | None = None) -> None:
    db.add(Event(kind=kind, object_uid=object_uid, actor_uid=actor_uid,
                 from_status=from_status, to_status=to_status,
                 detail=detail[:2000] if detail else None))
