"""/events: the event log, readable by super users, and by owners for their own objects."""

from __future__ import annotations

from flask import Blueprint, jsonify, request
from sqlalchemy import select

from xwvm.errors import BadRequest
from xwvm.server import policy
from xwvm.server.api import views
from xwvm.server.api.base import db, principal
from xwvm.server.db.models import Event
from xwvm.server.rights import Level
from xwvm.server.services import objects as object_service

bp = Blueprint("events", __name__)


@bp.get("/events")
def list_events():
    p = principal()
    policy.require(p, "read_events")
    obj = request.args.get("object")
    try:
        since = int(request.args.get("since", 0))
        limit = min(int(request.args.get("limit", 1000)), 10000)
    except ValueError:
        raise BadRequest("since and limit must be integers", code="bad_query") from None
    q = select(Event).where(Event.id > since).order_by(Event.id).limit(limit)
    if obj:
        _, target = object_service.find(db(), obj)
        policy.check(p, target, "r", "object")
        q = q.where(Event.object_uid == target.uid)
    elif p.level < Level.SUPER:
        raise BadRequest("name the object whose events you want (the object parameter): "
                         "only super users read the whole log",
                         code="bad_query")
    return jsonify([views.event(e) for e in db().scalars(q)])
