"""Request plumbing shared by the blueprints: session, principal, JSON bodies, uploads."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
from flask import current_app, g, request
from sqlalchemy.orm import Session

from contextualizer.schema_errors import API, schema_issues
from xwvm.errors import BadRequest, TooLarge, Unauthorized
from xwvm.server.blobs import BlobStore
from xwvm.server.config import ServerConfig
from xwvm.server.policy import Principal
from xwvm.server.services import users as user_service

# Deeper JSON than this is refused: no schema of ours nests half as deep.
MAX_DEPTH = 32
# Shapes more than one schema uses. The schema owns a field's shape; services check only
# what needs the database or the caller. (maxLength: "$" also matches before a final "\n".)
SHA256 = {"type": "string", "pattern": "^[0-9a-fA-F]{64}$", "minLength": 64, "maxLength": 64}
#: Integer columns are 32-bit (a larger value is a clear 400 here, not a database error).
INT32_MAX = 2**31 - 1
#: Sizes and other big counts: exact in every JSON parser, and within a BIGINT column.
JSON_INT_MAX = 2**53 - 1
SIZE = {"type": "integer", "minimum": 0, "maximum": JSON_INT_MAX}
INT32_COUNT = {"type": "integer", "minimum": 0, "maximum": INT32_MAX}


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
        g.principal = user_service.principal_for(db(), secret(), header[7:].strip(), cfg())
    return g.principal


def json_body(schema: dict[str, Any]) -> dict[str, Any]:
    """The request's JSON object, validated against ``schema``. The body is bounded while
    it streams (a chunked body has no Content-Length to check first), and no error names a
    submitted value: messages say where (the JSON path) and which rule, never what."""
    body = _parse(_read_bounded(cfg().max_json_bytes))
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(body),
                    key=lambda e: list(e.absolute_path))
    if errors:
        details = [{"path": i.path, "message": i.message} for i in schema_issues(errors, API)]
        first = details[0]
        raise BadRequest(f"invalid request: {first['path']}: {first['message']}",
                         code="invalid_body", details=details)
    return body


def _read_bounded(limit: int) -> bytes:
    length = request.content_length
    if length is not None and length > limit:
        raise TooLarge(f"JSON body of {length} bytes exceeds {limit}")
    if not request.is_json:
        raise BadRequest(_NOT_JSON, code="malformed_json")
    # Werkzeug stops reading here, whatever the framing; a byte more than the limit is how
    # an overlong chunked body shows (reading exactly up to its limit, it raises nothing).
    request.max_content_length = limit + 1
    raw = request.get_data(cache=False)
    if len(raw) > limit:
        raise TooLarge(f"JSON body (streamed without a Content-Length) exceeds {limit} bytes")
    return raw


_NOT_JSON = "the request body must be a JSON object (Content-Type: application/json)"


def _parse(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except RecursionError:
        raise BadRequest(f"the JSON body is nested deeper than {MAX_DEPTH} levels",
                         code="too_deep") from None
    except ValueError:  # the decoder's message quotes no input, but say it our way
        raise BadRequest(f"{_NOT_JSON}: this one is not valid JSON",
                         code="malformed_json") from None
    if body is None:  # "null": no object at all, as Flask's get_json saw it
        raise BadRequest(_NOT_JSON, code="malformed_json")
    if _depth(body) > MAX_DEPTH:
        raise BadRequest(f"the JSON body is nested deeper than {MAX_DEPTH} levels",
                         code="too_deep")
    return body


def _depth(value: Any) -> int:
    """How deeply lists and objects nest (iterative: the input chooses the depth)."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, level = todo.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if level <= MAX_DEPTH:
                todo.extend((x, level + 1) for x in
                            (item.values() if isinstance(item, dict) else item))
    return deepest


def upload_length() -> int:
    length = request.content_length
    if length is None:
        raise BadRequest("uploads need a Content-Length header", code="no_length")
    return length


def commit() -> None:
    db().commit()
