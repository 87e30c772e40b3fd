"""Helpers shared by the services: lookups that answer 404 and URI formatting."""

from __future__ import annotations

import uuid
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from xwvm.errors import BadRequest, NotFound

T = TypeVar("T")  # a model class with a ``uid`` column


def check_uid(uid: str, what: str) -> str:
    try:
        return str(uuid.UUID(uid))
    except (ValueError, AttributeError, TypeError):
        raise BadRequest(f"{what} id {uid!r} is not a UUID", code="bad_uid") from None


def get_or_404(db: Session, model: type[T], uid: str, what: str) -> T:
    """Every model has a ``uid`` column (for jobs it is not the primary key)."""
    obj = db.scalars(select(model).where(model.uid == check_uid(uid, what))).first()
    if obj is None:
        raise NotFound(f"no {what} with id {uid}", code=f"unknown_{what}")
    return obj


def xw_uri(public_name: str, uid: str) -> str:
    return f"xw://{public_name}/{uid}"
