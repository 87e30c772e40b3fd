"""/auth: login with a password for a bearer token, logout, whoami, password change;
/ca: the server's CA certificate, for a client to pin."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from flask import Blueprint, Response, g, jsonify, request

from xwvm.errors import Unauthorized, XwvmError
from xwvm.server.api import views
from xwvm.server.api.base import cfg, commit, db, json_body, principal, secret
from xwvm.server.auth import oidc, outside, ratelimit, x509
from xwvm.server.db.models import User
from xwvm.server.services import users as user_service

bp = Blueprint("auth", __name__)

LOGIN = {"type": "object", "additionalProperties": False, "required": ["login", "password"],
         "properties": {"login": {"type": "string", "minLength": 1, "maxLength": 128},
                        "password": {"type": "string", "minLength": 1, "maxLength": 1024}}}
CERT = {"type": "string", "minLength": 1, "maxLength": 65536}
X509_CHALLENGE = {"type": "object", "additionalProperties": False, "required": ["certificate"],
                  "properties": {"certificate": CERT}}
X509_LOGIN = {"type": "object", "additionalProperties": False,
              "required": ["certificate", "nonce", "signature"],
              "properties": {"certificate": CERT,
                             "nonce": {"type": "string", "minLength": 1, "maxLength": 64},
                             "signature": {"type": "string", "minLength": 1,
                                           "maxLength": 4096}}}
OIDC_START = {"type": "object", "additionalProperties": False,
              "required": ["redirect_uri", "code_challenge"],
              "properties": {"redirect_uri": {"type": "string", "maxLength": 512},
                             "code_challenge": {"type": "string", "maxLength": 128}}}
OIDC_FINISH = {"type": "object", "additionalProperties": False,
               "required": ["state", "code", "code_verifier"],
               "properties": {"state": {"type": "string", "minLength": 1, "maxLength": 64},
                              "code": {"type": "string", "minLength": 1, "maxLength": 4096},
                              "code_verifier": {"type": "string", "maxLength": 128}}}
PASSWORD = {"type": "object", "additionalProperties": False,
            "required": ["old_password", "new_password"],
            "properties": {"old_password": {"type": "string", "minLength": 1, "maxLength": 1024},
                           "new_password": {"type": "string", "minLength": 1,
                                            "maxLength": 1024}}}


def _limits(login: str) -> list[ratelimit.Limit]:
    """The attacker's address is throttled harder than the account: five guesses lock
    the account for that address only; the account's own limit, across addresses, is high
    and only refuses addresses that have failed for it themselves."""
    c, address = cfg(), request.remote_addr
    pair = ratelimit.pair_key(login, address)
    return [ratelimit.Limit(pair, c.login_max_failures, "this account from your address"),
            ratelimit.Limit(ratelimit.address_key(address), c.login_max_failures_per_address,
                            "your address"),
            ratelimit.Limit(ratelimit.account_key(login), c.login_max_failures_per_account,
                            "this account", waived_unless=pair)]


@bp.after_request
def _retry_after(resp: Response) -> Response:
    wait = g.get("retry_after")
    if wait is not None:
        resp.headers["Retry-After"] = str(wait)
    return resp


def throttled(login: str) -> list[int]:
    """Count this attempt, then refuse it (429, with Retry-After) if its login or address
    failed too often lately; returns the attempt's counter rows, which stay if it fails
    and go (with the pair's earlier failures) if it succeeds."""
    try:
        return ratelimit.take(db(), _limits(login), cfg().login_window_s)
    except ratelimit.TooManyAttempts as e:
        g.retry_after = e.retry_after_s
        raise


def _succeeded(login: str, attempt: list[int]) -> None:
    ratelimit.forget(db(), attempt)
    ratelimit.clear(db(), ratelimit.pair_key(login, request.remote_addr))


@contextmanager
def _judging(attempt: list[int]) -> Iterator[None]:
    """A refused password leaves the attempt counted; any other refusal (a weak new
    password after the right old one) is no guess, and is forgotten."""
    try:
        yield
    except Unauthorized:
        raise
    except XwvmError:
        db().rollback()
        ratelimit.forget(db(), attempt)
        commit()
        raise


@bp.post("/auth/login")
def login():
    body = json_body(LOGIN)
    g.login_attempt = body["login"]  # named in the event if the login is refused
    attempt = throttled(body["login"])  # counted (committed) before it is judged
    token, user, expires = user_service.login(
        db(), secret(), body["login"], body["password"], cfg().token_lifetime_s,
        cfg().worker_token_lifetime_s)
    _succeeded(body["login"], attempt)
    commit()
    return jsonify(token=token, expires_at=expires.isoformat(),
                   user=views.user(user, cfg().public_name))


@bp.post("/auth/x509/challenge")
def x509_challenge():
    """A single-use nonce for a certificate, once the certificate itself is acceptable."""
    body = json_body(X509_CHALLENGE)
    answer = x509.challenge(db(), cfg(), body["certificate"])
    commit()
    return jsonify(answer)


@bp.post("/auth/x509/login")
def x509_login():
    """Proof of possession: the challenge signed with the certificate's key."""
    body = json_body(X509_LOGIN)
    row = outside.burn_nonce(db(), body["nonce"], "x509")
    commit()  # a failed attempt uses the nonce up too
    token, user, expires = x509.login(db(), cfg(), secret(), body["certificate"], row,
                                      body["signature"])
    commit()
    return jsonify(token=token, expires_at=expires.isoformat(),
                   user=views.user(user, cfg().public_name))


@bp.post("/auth/oidc/start")
def oidc_start():
    """The issuer's authorization URL for a CLI's loopback redirect and PKCE challenge."""
    body = json_body(OIDC_START)
    c = cfg()
    try:  # anonymous, and each start is a row: counted per address like logins
        ratelimit.take(db(), [ratelimit.Limit(ratelimit.oidc_key(request.remote_addr),
                                              c.oidc_starts_per_address, "your address")],
                       c.login_window_s)
    except ratelimit.TooManyAttempts as e:
        g.retry_after = e.retry_after_s
        raise
    answer = oidc.start(db(), c, body["redirect_uri"], body["code_challenge"])
    commit()
    return jsonify(answer)


@bp.post("/auth/oidc/finish")
def oidc_finish():
    body = json_body(OIDC_FINISH)
    row = outside.burn_nonce(db(), body["state"], "oidc")
    commit()  # the state is used up whatever follows
    token, user, expires = oidc.finish(db(), cfg(), secret(), row, body["code"],
                                       body["code_verifier"])
    commit()
    return jsonify(token=token, expires_at=expires.isoformat(),
                   user=views.user(user, cfg().public_name))


@bp.post("/auth/password")
def change_password():
    """Change one's own password: every token of the account is revoked and a new one
    is returned."""
    body = json_body(PASSWORD)
    p = principal()
    g.login_attempt = p.login
    attempt = throttled(p.login)
    with _judging(attempt):
        user = user_service.change_password(db(), p, body["old_password"],
                                            body["new_password"])
    _succeeded(p.login, attempt)
    token, user, expires = user_service.session_for(
        db(), secret(), user, cfg().token_lifetime_s, cfg().worker_token_lifetime_s,
        how="password change")
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


@bp.get("/ca")
def ca():
    """The CA that signed the server's certificate. Unauthenticated and, by itself, not to
    be trusted: a client pins it only once its SHA-256 fingerprint matches the one the
    server's admin gave (see `xwvm login --ca-fingerprint`)."""
    return Response(cfg().ca_cert.read_bytes(), mimetype="application/x-pem-file")
