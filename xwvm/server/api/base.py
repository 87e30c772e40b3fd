"""Request plumbing shared by the blueprints: session, principal, JSON bodies, uploads."""

from __future__ import annotations

from typing import Any

import jsonschema
from flask import current_app, g, request
from sqlalchemy.orm import Session

from xwvm.errors import BadRequest, TooLarge, Unauthorized
from xwvm.server.blobs import BlobStore
from xwvm.server.config import ServerConfig
from xwvm.server.policy import Principal
from xwvm.server.services import users as user_service


def cfg() -> ServerConfig:
    return current_app.extensions["xwvm"]["config"]


def store() -> BlobStore:
    return current_app.extensions["xwvm"]["blobs"]


def secret() -> bytes:
    return current_app.extensions["xwvm"]["secret"]


def db() -> Session:
    if "db" not in g:
        g.db = current_app.extensions["xwvm"]["sessions"]()
    return g.db


def principal() -> Principal:
    if "principal" not in g:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            raise Unauthorized("missing bearer token: log in first", code="no_token")
        g.principal = user_service.principal_for(db(), secret(), header[7:].strip())
    return g.principal


def json_body(schema: dict[str, Any]) -> dict[str, Any]:
    length = request.content_length
    if length is not None and length > cfg().max_json_bytes:
        raise TooLarge(f"JSON body of {length} bytes exceeds {cfg().max_json_bytes}")
    body = request.get_json(silent=True)
    if body is None:
        raise BadRequest("the request body must be a JSON object "
                         "(Content-Type: application/json)", code="malformed_json")
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(body),
                    key=lambda e: list(e.absolute_path))
    if errors:
        details = [{"path": "/" + "/".join(str(x) for x in e.absolute_path),
                    "message": e.message} for e in errors]
        first = details[0]
        raise BadRequest(f"invalid request: {first['path']}: {first['message']}",
                         code="invalid_body", details=details)
    return body


def upload_length() -> int:
    length = request.content_length
    if length is None:
        raise BadRequest("uploads need a Content-Length header", code="no_length")
    return length


def commit() -> None:
    db().commit()
