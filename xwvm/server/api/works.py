"""/works: submit, list, show, why a job waits, abort/hold/release, remove, results; the
worker's reports."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from xwvm.protocol import NetworkPolicy
from xwvm.protocol.calls import WorkAnswer
from xwvm.protocol.vocab import EXIT_CODE_MAX, EXIT_CODE_MIN
from xwvm.server.api import views
from xwvm.server.api.base import (
    INT32_COUNT,
    cfg,
    commit,
    db,
    json_body,
    principal,
    store,
    upload_length,
)
from xwvm.server.api.download import blob_response
from xwvm.server.rights import PUBLIC, parse_mode
from xwvm.server.services import works as work_service

bp = Blueprint("works", __name__)

_STR = {"type": "string", "maxLength": 65536}
# Every submitted integer is bounded by what it becomes, so that no value is refused by a
# timedelta or a database column (a 500) instead of by the schema (invalid_body):
#: seconds (a wall clock, a pilot's idle time): ten years; a token's lifetime derives from it
MAX_SECONDS = 10 * 365 * 86400
_SECONDS = {"type": ["integer", "null"], "minimum": 1, "maximum": MAX_SECONDS}
_COUNT = {"type": "integer", "minimum": 0, "maximum": 2**40}  # a BIGINT column
MAX_ARGS, MAX_ENV = 1024, 256
SUBMIT = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "app": {"type": ["string", "null"], "minLength": 1},
        "template": {"type": ["string", "null"], "minLength": 1, "maxLength": 300},
        "command": {"type": ["string", "null"], "maxLength": 65536},
        "network": {"enum": [str(n) for n in NetworkPolicy]},
        "pilot": {"type": "boolean"},
        "pilot_idle_s": _SECONDS,
        "args": {"type": "array", "items": _STR, "maxItems": MAX_ARGS},
        "env": {"type": "object", "additionalProperties": _STR, "maxProperties": MAX_ENV},
        "inputs": {"type": "array", "items": {
            "type": "object", "additionalProperties": False, "required": ["data", "name"],
            "properties": {"data": {"type": "string"}, "name": {"type": "string"}}}},
        "stdin": {"type": ["string", "null"]},
        "max_retries": {"type": ["integer", "null"], "minimum": 0, "maximum": 1000},
        "wall_clock_s": _SECONDS,
        "min_memory_mb": INT32_COUNT, "min_cpus": INT32_COUNT, "min_disk_mb": _COUNT,
        "expected_host": {"type": ["string", "null"]},
        "listen_port": {"type": ["integer", "null"]},
        "label": {"type": ["string", "null"], "maxLength": 255},
        "hold": {"type": "boolean"},
        "access_rights": {"type": "string", "maxLength": 64},
        "context": {"type": ["string", "null"]},
    }}
# The status's vocabulary is checked by the protocol's Report, in the service, once the
# caller is known to hold the job (a schema enum here would answer strangers first).
REPORT = {"type": "object", "additionalProperties": False, "required": ["status"],
          "properties": {"status": {"type": "string", "maxLength": 32},
                         "exit_code": {"type": ["integer", "null"],
                                       "minimum": EXIT_CODE_MIN, "maximum": EXIT_CODE_MAX},
                         "message": {"type": ["string", "null"], "maxLength": 65536},
                         "fault": {"type": ["string", "null"], "maxLength": 32}}}


def _view(work):
    return views.work(work, cfg().public_name)


@bp.post("/works")
def submit():
    body = json_body(SUBMIT)
    mode = parse_mode(body.pop("access_rights", "755"), PUBLIC)
    spec = work_service.WorkSpec(**body, access_rights=mode)
    work = work_service.submit(db(), principal(), spec, cfg().default_max_retries)
    commit()
    return jsonify(_view(work)), 201


@bp.get("/works")
def list_works():
    uids = [u for u in request.args.getlist("uid") if u]
    rows = work_service.list_works(db(), principal(), uids or None, request.args.get("status"))
    return jsonify([_view(w) for w in rows])


@bp.get("/works/<uid>")
def show(uid: str):
    return jsonify(_view(work_service.get_readable(db(), principal(), uid)))


@bp.get("/works/<uid>/why")
def why(uid: str):
    """Why the job waits: hosts considered, how many fail each matching condition, and a
    one-line summary (to its owner or an administrator)."""
    return jsonify(work_service.why(db(), principal(), uid).to_json())


@bp.post("/works/<uid>/<any(abort, hold, release):action>")
def owner_action(uid: str, action: str):
    work = work_service.owner_action(db(), principal(), uid, action)
    commit()
    return jsonify(_view(work))


@bp.delete("/works/<uid>")
def delete(uid: str):
    work_service.delete(db(), store(), principal(), uid)
    commit()
    return jsonify(ok=True)


@bp.get("/works/<uid>/result")
def result(uid: str):
    data = work_service.readable_result(db(), principal(), uid)
    db().close()
    return blob_response(store(), data.sha256, data.size, data.name)


@bp.put("/works/<uid>/result")
def upload_result(uid: str):
    p = principal()
    data = work_service.upload_result(db(), store(), p, uid, request.stream, upload_length(),
                                      cfg().max_upload_bytes,
                                      request.headers.get("X-Content-SHA256"))
    commit()
    return jsonify(views.data(data, cfg().public_name))


PROGRESS = {"type": "object", "additionalProperties": False,
            "properties": {"phase": {"type": "string", "maxLength": 64}}}


@bp.post("/works/<uid>/progress")
def progress(uid: str):
    body = json_body(PROGRESS)
    answer = work_service.progress(db(), principal(), uid, body.get("phase", "running"))
    commit()
    return jsonify(answer.to_json())


@bp.post("/works/<uid>/pilot-work")
def pilot_work(uid: str):
    work = work_service.pilot_work(db(), principal(), uid, cfg().wall_clock)
    commit()
    return jsonify(WorkAnswer(work=work).to_json())


@bp.post("/works/<uid>/report")
def report(uid: str):
    body = json_body(REPORT)
    work = work_service.report(db(), principal(), uid, body, cfg().breaker)
    commit()
    return jsonify(_view(work))
