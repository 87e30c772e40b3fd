"""/users, /groups and /workers/enroll."""

from __future__ import annotations

from flask import Blueprint, jsonify

from xwvm.server.api import views
from xwvm.server.api.base import cfg, commit, db, json_body, principal
from xwvm.server.rights import Level
from xwvm.server.services import users as user_service

bp = Blueprint("users", __name__)

NEW_USER = {"type": "object", "additionalProperties": False,
            "required": ["login", "password", "rights"],
            "properties": {"login": {"type": "string"},
                           "password": {"type": "string", "maxLength": 1024},
                           "rights": {"type": "string"},
                           "group": {"type": ["string", "null"]},
                           "public": {"type": "boolean"}}}
NEW_GROUP = {"type": "object", "additionalProperties": False, "required": ["name"],
             "properties": {"name": {"type": "string"}}}
ENROLL = {"type": "object", "additionalProperties": False,
          "properties": {"project": {"type": ["string", "null"]},
                         "public": {"type": "boolean"}}}


@bp.post("/users")
def create_user():
    body = json_body(NEW_USER)
    user = user_service.create_user(db(), principal(), body["login"], body["password"],
                                    Level.parse(body["rights"]), body.get("group"),
                                    public=bool(body.get("public", False)))
    commit()
    return jsonify(views.user(user, cfg().public_name)), 201


@bp.get("/users")
def list_users():
    return jsonify([views.user(u, cfg().public_name)
                    for u in user_service.list_users(db(), principal())])


@bp.post("/users/<uid>/disable")
def disable_user(uid: str):
    """Disable an account: its tokens are revoked and no login succeeds until enabled."""
    user = user_service.set_enabled(db(), principal(), uid, False)
    commit()
    return jsonify(views.user(user, cfg().public_name))


@bp.post("/users/<uid>/enable")
def enable_user(uid: str):
    user = user_service.set_enabled(db(), principal(), uid, True)
    commit()
    return jsonify(views.user(user, cfg().public_name))


@bp.delete("/users/<ref>")
def remove_user(ref: str):
    """Remove an account (by login or id); refused while it owns unfinished jobs."""
    user = user_service.remove_user(db(), principal(), ref)
    commit()
    return jsonify(views.user(user, cfg().public_name))


@bp.post("/groups")
def create_group():
    body = json_body(NEW_GROUP)
    grp = user_service.create_group(db(), principal(), body["name"])
    commit()
    return jsonify(views.group(grp, cfg().public_name)), 201


@bp.get("/groups")
def list_groups():
    return jsonify([views.group(g, cfg().public_name)
                    for g in user_service.list_groups(db(), principal())])


@bp.delete("/groups/<name>")
def remove_group(name: str):
    """Remove a usergroup; refused while accounts belong to it."""
    grp = user_service.remove_group(db(), principal(), name)
    commit()
    return jsonify(views.group(grp, cfg().public_name))


@bp.post("/workers/enroll")
def enroll():
    body = json_body(ENROLL)
    user, password = user_service.enroll_worker(db(), principal(), body.get("project"),
                                                bool(body.get("public", False)))
    commit()
    return jsonify(login=user.login, password=password,
                   user=views.user(user, cfg().public_name)), 201
