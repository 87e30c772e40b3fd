"""/hosts: worker registration, heartbeats and work requests; the list of workers."""

from __future__ import annotations

from flask import Blueprint, jsonify

from xwvm.errors import BadRequest
from xwvm.protocol.calls import WorkAnswer
from xwvm.protocol.messages import HostFacts
from xwvm.server.api import views
from xwvm.server.api.base import INT32_COUNT, SIZE, cfg, commit, db, json_body, principal, secret
from xwvm.server.services import hosts as host_service

bp = Blueprint("hosts", __name__)

_NAME = {"type": "string", "pattern": "^[a-z0-9_]{1,32}$"}
# One hypervisor's probe (protocol HypervisorProbe), bounded here; HostFacts.from_json then
# checks its types. Fields a newer worker adds are kept small and flat.
_PROBE = {
    "type": "object", "required": ["usable"], "maxProperties": 16,
    "additionalProperties": {"type": ["string", "number", "boolean", "null"],
                             "maxLength": 256},
    "properties": {
        "usable": {"type": "boolean"},
        "reason": {"type": "string", "maxLength": 4096},
        "accel": {"type": ["string", "null"], "maxLength": 32},
        "version": {"type": "string", "maxLength": 256},
        "networks": {"type": ["array", "null"], "maxItems": 16,
                     "items": {"type": "string", "maxLength": 32}},
        "limits": {"type": ["object", "null"], "maxProperties": 8,
                   "additionalProperties": SIZE},
        "app_keys": {"type": ["array", "null"], "maxItems": 256,
                     "items": {"type": "string", "maxLength": 128}},
        "unsigned_apps": {"type": ["boolean", "null"]},
        "template_keys": {"type": ["array", "null"], "maxItems": 256,
                          "items": {"type": "string", "maxLength": 128}},
    }}
REGISTER = {
    "type": "object", "additionalProperties": False,
    "required": ["name", "os", "arch", "cpus", "memory_mb", "disk_mb"],
    "properties": {
        "uid": {"type": ["string", "null"]},
        "name": {"type": "string", "maxLength": 255},
        "os": _NAME, "arch": _NAME,
        "cpus": {"type": "integer", "minimum": 1, "maximum": 100000},
        "memory_mb": INT32_COUNT,
        "disk_mb": SIZE,
        "shared_apps": {"type": "array", "items": {"type": "string", "maxLength": 128},
                        "maxItems": 256},
        "hypervisors": {"type": "object", "maxProperties": 16, "propertyNames": _NAME,
                        "additionalProperties": _PROBE},
        "version": {"type": "string", "maxLength": 32},
        "templates_held": {"type": "array", "items": {"type": "string", "maxLength": 36},
                           "maxItems": 1024},
    }}
HEARTBEAT = {"type": "object", "additionalProperties": False,
             "properties": {"running": {"type": "array", "items": {"type": "string"},
                                        "maxItems": 4096},
                            "templates_held": {"type": "array", "maxItems": 1024,
                                               "items": {"type": "string", "maxLength": 36}}}}


@bp.post("/hosts")
def register():
    try:  # the schema bounds the sizes; the protocol checks each hypervisor's probe
        facts = HostFacts.from_json(json_body(REGISTER))
    except ValueError as e:
        raise BadRequest(f"invalid host facts: {e}", code="invalid_body") from None
    host = host_service.register(db(), principal(), facts, cfg().alive_period_s)
    commit()
    return jsonify(views.host(host, cfg().public_name)), 201


@bp.post("/hosts/<uid>/heartbeat")
def heartbeat(uid: str):
    body = json_body(HEARTBEAT)
    answer = host_service.heartbeat(db(), principal(), uid, body.get("running", []),
                                    body.get("templates_held"))
    commit()
    return jsonify(answer.to_json())


@bp.post("/hosts/<uid>/work")
def request_work(uid: str):
    work = host_service.request_work(db(), principal(), uid, secret(), cfg().wall_clock)
    commit()
    if isinstance(work, float):  # the host's circuit breaker is open: ask again after it
        return jsonify(WorkAnswer(retry_after=max(work, cfg().idle_retry_s)).to_json())
    if work is None:
        return jsonify(WorkAnswer(retry_after=cfg().idle_retry_s).to_json())
    return jsonify(WorkAnswer(work=work, alive_period=cfg().alive_period_s).to_json())


@bp.get("/hosts")
def list_hosts():
    return jsonify([views.host(h, cfg().public_name)
                    for h in host_service.list_hosts(db(), principal())])


@bp.post("/hosts/<uid>/goodbye")
def goodbye(uid: str):
    """A worker stopping cleanly: its host is "stopped" until it registers again."""
    host = host_service.goodbye(db(), principal(), uid)
    commit()
    return jsonify(views.host(host, cfg().public_name))


@bp.delete("/hosts/<ref>")
def remove(ref: str):
    """Remove a host (by id or name): its running jobs are lost, it is "gone"."""
    host = host_service.remove(db(), principal(), ref)
    commit()
    return jsonify(views.host(host, cfg().public_name))
