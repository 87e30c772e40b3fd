"""/data: data objects, content upload (verified, atomic) and download (Range, ETag)."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from xwvm.errors import Conflict
from xwvm.server import policy
from xwvm.server.api import views
from xwvm.server.api.base import (
    SHA256,
    SIZE,
    cfg,
    commit,
    db,
    json_body,
    principal,
    store,
    upload_length,
)
from xwvm.server.api.download import blob_response
from xwvm.server.db.models import Data
from xwvm.server.rights import PUBLIC, parse_mode
from xwvm.server.services import data as data_service
from xwvm.server.services.common import get_or_404

bp = Blueprint("data", __name__)

NEW_DATA = {"type": "object", "additionalProperties": False, "required": ["name"],
            "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 255},
                           "size": SIZE, "sha256": SHA256,
                           "access_rights": {"type": "string", "maxLength": 64}}}


@bp.post("/data")
def create():
    body = json_body(NEW_DATA)
    mode = parse_mode(body.get("access_rights", "755"), PUBLIC)
    data = data_service.create(db(), principal(), body["name"], size=body.get("size"),
                               sha256=body.get("sha256"), access_rights=mode)
    commit()
    return jsonify(views.data(data, cfg().public_name)), 201


@bp.put("/data/<uid>/content")
def upload(uid: str):
    p = principal()
    data = get_or_404(db(), Data, uid, "data")
    policy.check(p, data, "w", "data")
    data_service.store_content(db(), store(), data, request.stream, upload_length(),
                               cfg().max_upload_bytes, request.headers.get("X-Content-SHA256"),
                               p.uid)
    commit()
    return jsonify(views.data(data, cfg().public_name))


@bp.get("/data/<uid>")
def show(uid: str):
    return jsonify(views.data(data_service.get_readable(db(), principal(), uid),
                              cfg().public_name))


@bp.get("/data/<uid>/content")
def download(uid: str):
    data = data_service.get_readable(db(), principal(), uid)
    if data.status != "available" or data.sha256 is None or data.size is None:
        raise Conflict(f"data {uid} has no content yet", code="data_pending")
    db().close()
    return blob_response(store(), data.sha256, data.size, data.name)


@bp.get("/data")
def list_data():
    return jsonify([views.data(d, cfg().public_name)
                    for d in data_service.list_data(db(), principal())])


@bp.delete("/data/<uid>")
def delete(uid: str):
    data_service.delete(db(), store(), principal(), uid)
    commit()
    return jsonify(ok=True)
