"""/contexts: users' reusable VM context documents (validated with the contextualizer)."""

from __future__ import annotations

from flask import Blueprint, jsonify

from xwvm.server.api import views
from xwvm.server.api.base import cfg, commit, db, json_body, principal
from xwvm.server.rights import PRIVATE, parse_mode
from xwvm.server.services import contexts as context_service

bp = Blueprint("contexts", __name__)

# The document itself is checked by the contextualizer's schema (every issue at once,
# with JSON paths), not here.
NEW_CONTEXT = {"type": "object", "additionalProperties": False, "required": ["name", "document"],
               "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 255},
                              "document": {"type": "object"},
                              "access_rights": {"type": "string", "maxLength": 64}}}


def _view(ctx):
    return views.context(ctx, cfg().public_name)


@bp.post("/contexts")
def create():
    body = json_body(NEW_CONTEXT)
    mode = parse_mode(body.get("access_rights", "700"), PRIVATE)
    ctx = context_service.create(db(), principal(), body["name"], body["document"], mode)
    commit()
    return jsonify(_view(ctx)), 201


@bp.get("/contexts")
def list_contexts():
    return jsonify([_view(c) for c in context_service.list_contexts(db(), principal())])


@bp.get("/contexts/<uid>")
def show(uid: str):
    return jsonify(_view(context_service.get_readable(db(), principal(), uid)))


@bp.delete("/contexts/<uid>")
def delete(uid: str):
    context_service.delete(db(), principal(), uid)
    commit()
    return jsonify(ok=True)
