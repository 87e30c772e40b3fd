"""/auth: login with a password for a bearer token, logout, whoami."""

from __future__ import annotations

from flask import Blueprint, g, jsonify

from xwvm.server.api import views
from xwvm.server.api.base import cfg, commit, db, json_body, principal, secret
from xwvm.server.db.models import User
from xwvm.server.services import users as user_service

bp = Blueprint("auth", __name__)

LOGIN = {"type": "object", "additionalProperties": False, "required": ["login", "password"],
         "properties": {"login": {"type": "string", "minLength": 1, "maxLength": 128},
                        "password": {"type": "string", "minLength": 1, "maxLength": 1024}}}


@bp.post("/auth/login")
def login():
    body = json_body(LOGIN)
    g.login_attempt = body["login"]  # named in the event if the login is refused
    token, user, expires = user_service.login(
        db(), secret(), body["login"], body["password"], cfg().token_lifetime_s,
        cfg().worker_token_lifetime_s)
    commit()
    return jsonify(token=token, expires_at=expires.isoformat(),
                   user=views.user(user, cfg().public_name))


@bp.post("/auth/logout")
def logout():
    user_service.logout(db(), principal())
    commit()
    return jsonify(ok=True)


@bp.get("/auth/whoami")
def whoami():
    p = principal()
    user = db().get(User, p.uid)
    return jsonify(views.user(user, cfg().public_name))
