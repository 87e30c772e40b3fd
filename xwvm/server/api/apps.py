"""/apps: native and shared applications, and the signatures over native apps' manifests."""

from __future__ import annotations

from flask import Blueprint, jsonify

from xwvm.server import policy
from xwvm.server.api import views
from xwvm.server.api.base import cfg, commit, db, json_body, principal
from xwvm.server.rights import PUBLIC, parse_mode
from xwvm.server.services import apps as app_service

bp = Blueprint("apps", __name__)

NEW_APP = {"type": "object", "additionalProperties": False, "required": ["name"],
           "properties": {"name": {"type": "string"},
                          "kind": {"enum": ["native", "shared"]},
                          "binaries": {"type": "object",
                                       "additionalProperties": {"type": "string"}},
                          "access_rights": {"type": "string", "maxLength": 64}}}
UPDATE_BINARIES = {"type": "object", "additionalProperties": False,
                   "properties": {"binaries": {"type": "object", "maxProperties": 64,
                                               "additionalProperties": {"type": "string"}},
                                  "remove": {"type": "array", "maxItems": 64,
                                             "items": {"type": "string", "maxLength": 64}}}}
NEW_SIGNATURE = {"type": "object", "additionalProperties": False,
                 "required": ["public_key", "signature"],
                 "properties": {"public_key": {"type": "string", "maxLength": 100},
                                "signature": {"type": "string", "maxLength": 200}}}


def _view(app):
    signed = app_service.description_for_worker(db(), app)
    return {**views.app(app, app_service.binaries(db(), app.uid), cfg().public_name),
            "version": app.version, "signed": bool(signed["signatures"]),
            "signatures": signed["signatures"],
            "manifest": signed["manifest"], "signed_binaries": signed["binaries"]}


@bp.post("/apps")
def create():
    body = json_body(NEW_APP)
    mode = parse_mode(body.get("access_rights", "755"), PUBLIC)
    app = app_service.create(db(), principal(), body["name"], body.get("kind", "native"),
                             body.get("binaries", {}), mode)
    commit()
    return jsonify(_view(app)), 201


@bp.get("/apps")
def list_apps():
    return jsonify([_view(a) for a in app_service.list_apps(db(), principal())])


@bp.get("/apps/<ref>")
def show(ref: str):
    p = principal()
    app = app_service.find(db(), p, ref)
    policy.check(p, app, "r", "app")
    return jsonify(_view(app))


@bp.post("/apps/<ref>/signatures")
def sign(ref: str):
    body = json_body(NEW_SIGNATURE)
    app = app_service.add_signature(db(), principal(), ref, body["public_key"],
                                    body["signature"])
    commit()
    return jsonify(_view(app)), 201


@bp.post("/apps/<ref>/binaries")
def update_binaries(ref: str):
    """Add or replace binaries per platform, or remove some: the app's next version."""
    body = json_body(UPDATE_BINARIES)
    app = app_service.update_binaries(db(), principal(), ref, body.get("binaries", {}),
                                      body.get("remove", []))
    commit()
    return jsonify(_view(app))


@bp.delete("/apps/<ref>")
def delete(ref: str):
    app_service.delete(db(), principal(), ref)
    commit()
    return jsonify(ok=True)
