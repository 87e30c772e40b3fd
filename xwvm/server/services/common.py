"""Helpers shared by the services: lookups that answer 404, URI formatting, and what an id
or a name in a request means (ids first and only by id; names within a trusted namespace)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from xwvm.errors import BadRequest, Conflict, NotFound
from xwvm.ids import canonical_uid
from xwvm.server import policy
from xwvm.server.db.models import User
from xwvm.server.policy import Principal
from xwvm.server.rights import Level

T = TypeVar("T")  # a model class with a ``uid`` column
Owned = TypeVar("Owned", bound=policy.OwnedObject)


def check_uid(uid: str, what: str) -> str:
    canonical = canonical_uid(uid)
    if canonical is None:
        raise BadRequest(f"{what} id is not a UUID (nor xw://SERVER/UUID)", code="bad_uid")
    return canonical


def get_or_404(db: Session, model: type[T], uid: str, what: str) -> T:
    """Every model has a ``uid`` column (for jobs it is not the primary key)."""
    obj = db.scalars(select(model).where(model.uid == check_uid(uid, what))).first()
    if obj is None:
        raise NotFound(f"no {what} with id {uid}", code=f"unknown_{what}")
    return obj


# --- names and ids (issue 12, hole 7) ----------------------------------------------------
# An id always means that one object; a name means what the user trusts it to mean.

MAX_CANDIDATES = 20  # named in an ambiguity or not-found error; the rest are counted


def id_in_ref(ref: str, what: str) -> str | None:
    """The uid that ``ref`` names when it is an id (a UUID, or ``xw://SERVER/UID``), else
    None: then ``ref`` is a name. The server part of an xw:// reference is not checked
    (XtremWeb-HEP clients name their server there; ids are unique anyway)."""
    if ref[:5].lower() == "xw://":
        server, _, uid = ref[5:].rstrip("/").rpartition("/")
        canonical = canonical_uid(uid) if server else None
        if canonical is None:
            raise BadRequest(f"an xw:// reference (to {what}) is xw://SERVER/ID",
                             code="bad_uid")
        return canonical
    return canonical_uid(ref)


def check_name(name: str, what: str) -> None:
    """Refuse a name that reads as an id: it would shadow the object that id names."""
    if canonical_uid(name) is not None or name[:3].lower() == "xw:":
        raise BadRequest(f"{what} names must not have the shape of an id or of an xw:// "
                         "reference", code="name_is_id")


def _candidates(db: Session, rows: Sequence[Any]) -> list[dict[str, Any]]:
    logins = dict(db.execute(select(User.uid, User.login).where(
        User.uid.in_({r.owner_uid for r in rows}))).all())
    out = []
    for r in rows[:MAX_CANDIDATES]:
        c = {"uid": r.uid, "owner": logins.get(r.owner_uid, r.owner_uid)}
        if getattr(r, "version", None) is not None:
            c["version"] = r.version
        out.append(c)
    return out


def _listed(cands: list[dict[str, Any]], total: int) -> str:
    text = "; ".join(f"{c['uid']} (owner {c['owner']}"
                     + (f", version {c['version']})" if "version" in c else ")")
                     for c in cands)
    return text + (f"; and {total - len(cands)} more" if total > len(cands) else "")


def same_namespace(db: Session, p: Principal, model: type[Any]) -> Any:
    """A WHERE clause for ``model`` rows in ``p``'s own namespace of names: its own, or,
    for a super user, every super user's (they publish as one, see :func:`resolve_name`)."""
    if p.level < Level.SUPER:
        return model.owner_uid == p.uid
    return model.owner_uid.in_(select(User.uid).where(User.rights >= int(Level.SUPER)))


def resolve_name(db: Session, p: Principal, rows: Sequence[Owned], what: str,
                 visible: Callable[[Owned], bool] = lambda _: True) -> list[Owned]:
    """Of ``rows`` (the objects of one name), those the name means to ``p``: the most
    trusted tier that has any (:func:`policy.name_trust`: own, group, the
    administrators'). Two owners in that tier is an ambiguity (409 ``ambiguous_name``
    naming them); no row in any tier a 404 that lists, by id, the others' objects of that
    name that are ``visible`` to ``p`` (the caller's access check refuses the rest)."""
    levels = dict(db.execute(select(User.uid, User.rights).where(
        User.uid.in_({r.owner_uid for r in rows}))).all())
    tiers: dict[int, list[Owned]] = {}
    for r in rows:
        tier = policy.name_trust(p, r, Level(levels.get(r.owner_uid, Level.STANDARD)))
        if tier is not None:
            tiers.setdefault(tier, []).append(r)
    if not tiers:
        others = [r for r in rows if visible(r)]
        if not others:
            raise NotFound(f"no {what} of that name", code=f"unknown_{what}")
        cands = _candidates(db, others)
        raise NotFound(f"no {what} of that name is yours, your group's or an "
                       f"administrator's; other owners have one: "
                       f"{_listed(cands, len(others))} (name it by its id)",
                       code=f"unknown_{what}", details={"candidates": cands})
    tier = min(tiers)
    found = tiers[tier]
    if tier != policy.NAME_ADMIN and len({r.owner_uid for r in found}) > 1:
        cands = _candidates(db, found)
        raise Conflict(f"that {what} name is ambiguous: {_listed(cands, len(found))}; "
                       "name one by its id", code="ambiguous_name",
                       details={"candidates": cands})
    return found
