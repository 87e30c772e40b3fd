"""/templates: VM disk templates (create from uploads, sign, publish, deprecate, remove) and
their artifacts (Range, ETag) and chunk manifests."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request

from xwvm.protocol.vocab import ARTIFACT_FORMATS, ARTIFACT_ROLES
from xwvm.server.api import views
from xwvm.server.api.base import INT32_COUNT, JSON_INT_MAX, cfg, commit, db, json_body, principal
from xwvm.server.api.download import blob_response
from xwvm.server.api.uploads import image_store
from xwvm.server.db.models import Template
from xwvm.server.rights import PUBLIC, parse_mode
from xwvm.server.services import templates as template_service

bp = Blueprint("templates", __name__)

_ARTIFACT = {"type": "object", "additionalProperties": False,
             "required": ["role", "format", "upload"],
             "properties": {"role": {"enum": list(ARTIFACT_ROLES)},
                            "format": {"type": "string", "maxLength": 32},
                            "upload": {"type": "string"},
                            "virtual_size": {"type": ["integer", "null"], "minimum": 0,
                                             "maximum": JSON_INT_MAX}},
             "allOf": [{"if": {"properties": {"role": {"const": role}}},
                        "then": {"properties": {"format": {"enum": list(formats)}}}}
                       for role, formats in ARTIFACT_FORMATS.items()]}
NEW_TEMPLATE = {
    "type": "object", "additionalProperties": False,
    "required": ["name", "version", "artifacts"],
    "properties": {
        "name": {"type": "string"}, "version": {"type": "string"},
        "os": {"type": "string", "maxLength": 64}, "arch": {"type": "string", "maxLength": 32},
        "artifacts": {"type": "array", "minItems": 1, "maxItems": 16, "items": _ARTIFACT},
        "cmdline": {"type": "string", "maxLength": 4096},
        "min_memory_mb": INT32_COUNT,
        "min_cpus": INT32_COUNT,
        "shared_apps": {"type": "array", "items": {"type": "string", "minLength": 1}},
        "spec": {"type": "object"}, "description": {"type": "string", "maxLength": 4096},
        "access_rights": {"type": "string", "maxLength": 64}}}
NEW_SIGNATURE = {"type": "object", "additionalProperties": False,
                 "required": ["public_key", "signature"],
                 "properties": {"public_key": {"type": "string", "maxLength": 200},
                                "signature": {"type": "string", "maxLength": 200}}}


def _view(t: Template) -> dict[str, Any]:
    return views.template(t, cfg().public_name)


@bp.post("/templates")
def create():
    body = json_body(NEW_TEMPLATE)
    mode = parse_mode(body.pop("access_rights", "755"), PUBLIC)
    t = template_service.create(db(), principal(), body, access_rights=mode)
    commit()
    return jsonify(_view(t)), 201


@bp.get("/templates")
def list_templates():
    rows = template_service.list_templates(db(), principal(), request.args.get("name"),
                                           request.args.get("status"))
    return jsonify([_view(t) for t in rows])


@bp.get("/templates/<ref>")
def show(ref: str):
    return jsonify(_view(template_service.get_readable(db(), principal(), ref)))


@bp.get("/templates/<ref>/artifacts/<role>")
def download(ref: str, role: str):
    t = template_service.get_readable(db(), principal(), ref)
    a = template_service.artifact(t, role, request.args.get("format"))
    name = f"{t.name}-{t.version}-{role}.{a['format']}"
    db().close()
    return blob_response(image_store(), a["sha256"], a["size"], name)


@bp.get("/templates/<ref>/artifacts/<role>/chunks")
def chunks(ref: str, role: str):
    t = template_service.get_readable(db(), principal(), ref)
    a = template_service.artifact(t, role, request.args.get("format"))
    return jsonify({"role": a["role"], "format": a["format"], "size": a["size"],
                    "sha256": a["sha256"], "chunk_size": a.get("chunk_size"),
                    "chunks": a.get("chunks") or []})


@bp.post("/templates/<ref>/signatures")
def sign(ref: str):
    body = json_body(NEW_SIGNATURE)
    t = template_service.add_signature(db(), principal(), ref, body["public_key"],
                                       body["signature"])
    commit()
    return jsonify(_view(t))


@bp.post("/templates/<ref>/publish")
def publish(ref: str):
    t, warnings = template_service.publish(db(), principal(), ref)
    commit()
    return jsonify({**_view(t), "warnings": warnings})


@bp.post("/templates/<ref>/deprecate")
def deprecate(ref: str):
    t = template_service.deprecate(db(), principal(), ref)
    commit()
    return jsonify(_view(t))


@bp.delete("/templates/<ref>")
def delete(ref: str):
    template_service.delete(db(), image_store(), principal(), ref)
    commit()
    return jsonify(ok=True)
