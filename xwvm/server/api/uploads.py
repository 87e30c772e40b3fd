"""/uploads: resumable chunked uploads (Content-Range appends, offset queries, completion)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify, request

from xwvm.server.api.base import (
    SHA256,
    SIZE,
    cfg,
    commit,
    db,
    json_body,
    principal,
    upload_length,
)
from xwvm.server.blobs import BlobStore
from xwvm.server.db.models import UploadSession
from xwvm.server.services import uploads as upload_service

bp = Blueprint("uploads", __name__)

NEW_UPLOAD = {"type": "object", "additionalProperties": False, "required": ["size", "sha256"],
              "properties": {"size": SIZE, "sha256": SHA256}}


def image_store() -> BlobStore:
    """Template artifacts live in a blob store of their own, so that removing a data
    object never removes an image (and the other way round)."""
    ext = current_app.extensions["xwvm"]
    if "images" not in ext:
        ext["images"] = BlobStore(cfg().blob_dir / "images")
    return ext["images"]


def view(up: UploadSession) -> dict[str, Any]:
    return {"uid": up.uid, "size": up.size, "sha256": up.sha256, "received": up.received,
            "status": up.status, "chunk_size": upload_service.DEFAULT_CHUNK,
            "manifest_chunk_size": up.chunk_size, "created_at": up.created_at.isoformat(),
            "updated_at": up.updated_at.isoformat()}


def _answer(up: UploadSession, status: int = 200) -> Any:
    return jsonify(view(up)), status, {"Upload-Offset": str(up.received)}


@bp.post("/uploads")
def create():
    body = json_body(NEW_UPLOAD)
    up = upload_service.create(db(), image_store(), principal(), body["size"], body["sha256"],
                               max_size=cfg().max_upload_bytes)
    commit()
    return _answer(up, 201)


@bp.get("/uploads/<uid>")
def show(uid: str):
    return _answer(upload_service.get_owned(db(), principal(), uid))


@bp.put("/uploads/<uid>")
def append(uid: str):
    up = upload_service.append(db(), image_store(), principal(), uid,
                               request.headers.get("Content-Range"), request.stream,
                               upload_length())
    return _answer(up)


@bp.post("/uploads/<uid>/complete")
def complete(uid: str):
    return _answer(upload_service.complete(db(), image_store(), principal(), uid))


@bp.delete("/uploads/<uid>")
def abort(uid: str):
    upload_service.abort(db(), image_store(), principal(), uid)
    commit()
    return jsonify(ok=True)
