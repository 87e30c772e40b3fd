"""/objects/<uid>/chmod: access rights of any object."""

from __future__ import annotations

from flask import Blueprint, jsonify

from xwvm.server.api.base import commit, db, json_body, principal
from xwvm.server.rights import format_mode
from xwvm.server.services import objects as object_service

bp = Blueprint("objects", __name__)

CHMOD = {"type": "object", "additionalProperties": False, "required": ["mode"],
         "properties": {"mode": {"type": "string", "minLength": 1, "maxLength": 64}}}


@bp.post("/objects/<uid>/chmod")
def chmod(uid: str):
    body = json_body(CHMOD)
    what, mode = object_service.chmod(db(), principal(), uid, body["mode"])
    commit()
    return jsonify(uid=uid, kind=what, access_rights=format_mode(mode))
