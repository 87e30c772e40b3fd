"""The authorization matrix: every route of the API x every kind of caller x every access mode
of the object it acts on, generated from one table and checked with real HTTPS requests.

Each expected decision is computed by a small function that restates the rule it tests and
names where that rule lives (``xwvm/server/policy.py`` unless said otherwise), so that the
table reads like the policy. Denials are checked for their status, their JSON ``error`` code
and, for writes, for having changed nothing."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.support.processes import ServerProcess
from xwvm import signing
from xwvm.client.sdk import ApiError, Client

PASSWORD = "matrix-password-1"

# Who calls. The objects are owned by "owner", a standard user of group G (apps, templates
# and uploads need the group_admin level to create: their owner is "aowner", a group admin
# of G, and the "owner" actor stands for them there).
#   member  - a standard user of G            other   - a standard user of group O
#   gadmin  - a group admin of G              ogadmin - a group admin of group O
#   worker  - a public worker account         gworker - a worker account of project G
#   super   - the super user                  anon    - no token at all
#   vmcred  - the delegated credential of a VM job of "aowner" that a worker "aowner"
#             enrolled is running: the owner's identity, narrowed to that one job
ACTORS = ("anon", "owner", "member", "other", "gadmin", "ogadmin", "worker", "gworker",
          "super")
ALL_ACTORS = (*ACTORS, "vmcred")
WORKERS = ("worker", "gworker")
GROUP_ADMINS = ("gadmin", "ogadmin")  # "owner" is one too for apps, templates and uploads
MODES = ("700", "750", "755")
STICKY_MODES = ("1770", "1777")  # group / everyone may write, but the sticky bit is set
ADMIN_KINDS = ("app", "template", "upload")

Outcome = tuple[int, str | None]
OK: Outcome = (200, None)
CREATED: Outcome = (201, None)
NO_TOKEN: Outcome = (401, "no_token")  # api/base.py principal(): no bearer token
LEVEL: Outcome = (403, "forbidden_level")
ACCESS: Outcome = (403, "forbidden_access")
STICKY: Outcome = (403, "forbidden_sticky")
NOT_ASSIGNED: Outcome = (403, "forbidden_not_assigned")
DELEGATED: Outcome = (403, "forbidden_delegated")
NOT_YOUR_HOST: Outcome = (403, "not_your_host")


# --- the rules ------------------------------------------------------------------------------


def is_group_admin(actor: str, kind: str = "") -> bool:
    return actor in GROUP_ADMINS or (actor == "owner" and kind in ADMIN_KINDS)


def allows(actor: str, mode: str, bit: str) -> bool:
    """policy.allows: super users pass; worker accounts never (only through the jobs they
    hold); else the owner bits, the group bits (a group admin of the object's group passes),
    or the other bits."""
    if actor == "super":
        return True
    if actor in WORKERS or actor == "anon":
        return False
    m, b = int(mode, 8), {"r": 4, "w": 2, "x": 1}[bit]
    if actor == "owner":
        return bool(m & (b << 6))
    if actor == "gadmin":
        return True
    if actor == "member":
        return bool(m & (b << 3))
    return bool(m & b)  # other, ogadmin


def read(worker_denial: Outcome, allowed: Outcome = OK) -> Callable[[str, str], Outcome]:
    """policy.check(r). Workers get objects only through held jobs: check_data_read,
    check_template_read and check_worker_holds answer forbidden_not_assigned, plain
    policy.check (apps, contexts) forbidden_access."""
    def rule(actor: str, mode: str) -> Outcome:
        if actor == "anon":
            return NO_TOKEN
        if actor in WORKERS:
            return worker_denial
        return allowed if allows(actor, mode, "r") else ACCESS
    return rule


def write(allowed: Outcome = OK) -> Callable[[str, str], Outcome]:
    """policy.check(w): abort/hold/release (services/works.owner_action), data content."""
    def rule(actor: str, mode: str) -> Outcome:
        if actor == "anon":
            return NO_TOKEN
        return allowed if allows(actor, mode, "w") else ACCESS
    return rule


def delete(actor: str, mode: str) -> Outcome:
    """policy.check_delete: write access, and with the sticky bit only the owner (or super)."""
    if actor == "anon":
        return NO_TOKEN
    if not allows(actor, mode, "w"):
        return ACCESS
    if int(mode, 8) & 0o1000 and actor not in ("owner", "super"):
        return STICKY
    return OK


def chmod(actor: str, mode: str) -> Outcome:
    """policy.check_chmod: require("chmod") (no workers), then the owner, a super user, or a
    group admin of the object's group - whatever the mode."""
    if actor == "anon":
        return NO_TOKEN
    if actor in WORKERS:
        return LEVEL
    return OK if actor in ("owner", "super", "gadmin") else ACCESS


def events_of(actor: str, mode: str) -> Outcome:
    """api/events.py: require("read_events") (no workers), then policy.check(r) on the object."""
    if actor == "anon":
        return NO_TOKEN
    if actor in WORKERS:
        return LEVEL
    return OK if allows(actor, mode, "r") else ACCESS


def submit_app(actor: str, mode: str) -> Outcome:
    """services/works.submit: require("insert_work") (no workers), then exec on the app."""
    if actor == "anon":
        return NO_TOKEN
    if actor in WORKERS:
        return LEVEL
    return CREATED if allows(actor, mode, "x") else ACCESS


def uses(bit: str, minimum: str = "standard") -> Callable[[str, str], Outcome]:
    """Naming an object in a new one: services/works.submit (insert_work, then read access to
    inputs and stdin, policy.check(r); contexts.get_readable; templates.find_for_submit, exec)
    and services/apps.create (insert_app: group_admin, then read access to the binaries)."""
    def rule(actor: str, mode: str) -> Outcome:
        if actor == "anon":
            return NO_TOKEN
        if actor in WORKERS or minimum == "group_admin" and not (
                actor == "super" or actor in GROUP_ADMINS):
            return LEVEL
        return CREATED if allows(actor, mode, bit) else ACCESS
    return rule


def user_record(target: str) -> Callable[[str, str], Outcome]:
    """A user row is owned by its creator (the super user here), private (700), in the user's
    group: policy.check_chmod and the events' policy.check(r) let its group's admin in."""
    def rule(actor: str, mode: str) -> Outcome:
        if actor == "anon":
            return NO_TOKEN
        if actor in WORKERS:
            return LEVEL
        if actor == "super" or actor == "gadmin" and target in ("t_std", "t_ga") or (
                actor == "ogadmin" and target == "t_oth"):
            return OK
        return ACCESS
    return rule


def template_write(actor: str, mode: str) -> Outcome:
    """services/templates._writable: require("insert_template") (group_admin, no workers),
    then policy.check(w)."""
    if actor == "anon":
        return NO_TOKEN
    if actor in WORKERS or not (actor == "super" or is_group_admin(actor, "template")):
        return LEVEL
    return OK if allows(actor, mode, "w") else ACCESS


def worker_route(super_gets: Outcome, others: Outcome = NOT_ASSIGNED
                 ) -> Callable[[str, str], Outcome]:
    """policy.check_worker_holds: only the worker whose host holds the job (none here: the
    job is PENDING) - a super user passes it; the mode of the job does not matter."""
    def rule(actor: str, mode: str) -> Outcome:
        if actor == "anon":
            return NO_TOKEN
        return super_gets if actor == "super" else others
    return rule


def delegated_only(actor: str, mode: str) -> Outcome:
    """services/works.pilot_work: only a pilot VM's delegated credential."""
    return NO_TOKEN if actor == "anon" else DELEGATED


def upload_owner(allowed: Outcome = OK) -> Callable[[str, str], Outcome]:
    """services/uploads.get_owned: an upload session is its uploader's alone, not even a
    super user's."""
    def rule(actor: str, mode: str) -> Outcome:
        if actor == "anon":
            return NO_TOKEN
        return allowed if actor == "owner" else ACCESS
    return rule


def level_op(allowed: Outcome, minimum: str, workers: bool = False
             ) -> Callable[[str, str], Outcome]:
    """policy.require: _OPERATIONS gives each operation a minimum level and says whether
    worker accounts may do it (a non-worker below super may not do a worker-only one)."""
    def rule(actor: str, mode: str) -> Outcome:
        if actor == "anon":
            return NO_TOKEN
        if (actor in WORKERS) != workers and actor != "super":
            return LEVEL
        if minimum == "super" and actor != "super":
            return LEVEL
        if minimum == "group_admin" and not (actor == "super" or is_group_admin(actor)):
            return LEVEL
        return allowed
    return rule


PUBLIC_RULES: list[Callable[[str, str], Outcome]] = []


def anyone(allowed: Outcome = OK) -> Callable[[str, str], Outcome]:
    def rule(actor: str, mode: str) -> Outcome:
        return allowed
    PUBLIC_RULES.append(rule)
    return rule


def authenticated(allowed: Outcome = OK) -> Callable[[str, str], Outcome]:
    return lambda actor, mode: NO_TOKEN if actor == "anon" else allowed


def manage_user(target: str) -> Callable[[str, str], Outcome]:
    """services/users.set_enabled: require("insert_user") (group_admin, no workers), then
    manage_user_allowed: super; or a group admin of the target's group, for a target below
    group_admin. Targets: t_std (standard, G), t_ga (group_admin, G), t_oth (standard, O)."""
    def rule(actor: str, mode: str) -> Outcome:
        if actor == "anon":
            return NO_TOKEN
        if actor == "super":
            return OK
        if actor == "gadmin" and target == "t_std" or actor == "ogadmin" and target == "t_oth":
            return OK
        return LEVEL
    return rule


def new_user(rights: str) -> Callable[[str, str], Outcome]:
    """services/users.create_user of a user of group G: require("insert_user"), then
    manage_user_allowed (a group admin creates standard users of their own group)."""
    def rule(actor: str, mode: str) -> Outcome:
        if actor == "anon":
            return NO_TOKEN
        if actor == "super" or actor == "gadmin" and rights == "standard":
            return CREATED
        return LEVEL
    return rule


def enroll(kind: str) -> Callable[[str, str], Outcome]:
    """services/users.enroll_worker: require("enroll_worker") (standard, no workers); a
    project worker needs a group admin of that group (or super), a public one a super user."""
    def rule(actor: str, mode: str) -> Outcome:
        if actor == "anon":
            return NO_TOKEN
        if actor in WORKERS:
            return LEVEL
        if kind == "project" and actor not in ("gadmin", "super"):
            return LEVEL
        if kind == "public" and actor != "super":
            return LEVEL
        return CREATED
    return rule


def own_host(level_first: bool) -> Callable[[str, str], Outcome]:
    """services/hosts._own_host: the host's own worker account or a super user; request_work
    first require("request_work") (worker accounts only), heartbeat does not."""
    def rule(actor: str, mode: str) -> Outcome:
        if actor == "anon":
            return NO_TOKEN
        if actor in ("worker", "super"):
            return OK
        if level_first and actor not in WORKERS:
            return LEVEL
        return NOT_YOUR_HOST
    return rule


def whole_log(actor: str, mode: str) -> Outcome:
    """api/events.py: only super users read the whole log; others must name an object."""
    if actor == "anon":
        return NO_TOKEN
    if actor in WORKERS:
        return LEVEL
    return OK if actor == "super" else (400, "bad_query")


def delegated(ep: Ep) -> Outcome:
    """A delegated VM credential (policy.Principal.is_delegated, level vworker): every
    policy.require refuses it (forbidden_delegated), as do check_worker_holds and
    check_data_read for anything but its own job; plain object checks (policy.allows) treat
    it as a worker account (forbidden_access), templates as a worker holding no job."""
    if ep.rule in PUBLIC_RULES or ep.name == "whoami":
        return OK
    if ep.name in ("app-show", "context-show", "data-upload", "job-abort", "job-hold",
                   "job-release") or ep.method == "DELETE" and ep.kind != "upload":
        return ACCESS
    if ep.name in ("template-show", "template-artifact", "template-chunks"):
        return NOT_ASSIGNED
    if ep.name == "host-heartbeat":
        return NOT_YOUR_HOST
    return DELEGATED


# --- the table ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ep:
    name: str
    kind: str  # the object acted on: data, job, app, context, template, user, host, upload,
    #            or "" for none
    method: str
    path: str  # "{uid}" and "{name}" are the object's
    rule: Callable[[str, str], Outcome]
    body: Callable[[World, dict[str, Any]], dict[str, Any]] | None = None
    fresh: bool = False  # an object of its own for each case (the call may consume it)
    modes: tuple[str, ...] = MODES
    actors: tuple[str, ...] = ALL_ACTORS
    counted: str | None = None  # a list the super user reads: a refusal adds nothing to it


def _json(body: dict[str, Any]) -> Callable[[World, dict[str, Any]], dict[str, Any]]:
    return lambda w, obj: {"json": body}


def _unique(make: Callable[[str], dict[str, Any]]
            ) -> Callable[[World, dict[str, Any]], dict[str, Any]]:
    return lambda w, obj: {"json": make(uuid.uuid4().hex[:10])}


def _content(w: World, obj: dict[str, Any]) -> dict[str, Any]:
    return {"data": obj["_content"]}


def _chunk(w: World, obj: dict[str, Any]) -> dict[str, Any]:
    size = len(obj["_content"])
    return {"data": obj["_content"], "headers": {
        "Content-Type": "application/octet-stream",
        "Content-Range": f"bytes 0-{size - 1}/{size}"}}


def _signature(w: World, obj: dict[str, Any]) -> dict[str, Any]:
    sig = signing.sign(obj["manifest"], w.key)
    return {"json": {"public_key": sig.public_key, "signature": sig.signature}}


def _same_mode(w: World, obj: dict[str, Any]) -> dict[str, Any]:
    return {"json": {"mode": obj["access_rights"]}}


OBJECT_ENDPOINTS = [
    # data (api/data.py, services/data.py)
    Ep("data-show", "data", "GET", "/data/{uid}", read(NOT_ASSIGNED)),
    Ep("data-content", "data", "GET", "/data/{uid}/content", read(NOT_ASSIGNED)),
    Ep("data-upload", "data-empty", "PUT", "/data/{uid}/content", write(), _content,
       fresh=True),
    Ep("data-delete", "data", "DELETE", "/data/{uid}", delete, fresh=True,
       modes=MODES + STICKY_MODES),
    Ep("data-chmod", "data", "POST", "/objects/{uid}/chmod", chmod, _same_mode),
    Ep("data-events", "data", "GET", "/events?object={uid}", events_of),
    Ep("data-as-input", "data", "POST", "/works", uses("r"), lambda w, obj: {"json": {
        "app": w.job_app, "inputs": [{"data": obj["uid"], "name": "in.bin"}]}}),
    Ep("data-as-stdin", "data", "POST", "/works", uses("r"),
       lambda w, obj: {"json": {"app": w.job_app, "stdin": obj["uid"]}}),
    Ep("data-as-binary", "data", "POST", "/apps", uses("r", "group_admin"),
       lambda w, obj: {"json": {"name": f"bin-{uuid.uuid4().hex[:10]}", "kind": "native",
                                "binaries": {"linux/s390x": obj["uid"]}}},
       counted="/apps"),
    # jobs (api/works.py, services/works.py)
    Ep("job-show", "job", "GET", "/works/{uid}", read(NOT_ASSIGNED)),
    Ep("job-result", "job", "GET", "/works/{uid}/result",
       read(NOT_ASSIGNED, (409, "no_results"))),
    Ep("job-abort", "job", "POST", "/works/{uid}/abort", write(), fresh=True),
    Ep("job-hold", "job", "POST", "/works/{uid}/hold", write(), fresh=True),
    Ep("job-release", "job", "POST", "/works/{uid}/release",
       write((409, "illegal_transition"))),
    Ep("job-delete", "job", "DELETE", "/works/{uid}", delete, fresh=True,
       modes=MODES + STICKY_MODES),
    Ep("job-chmod", "job", "POST", "/objects/{uid}/chmod", chmod, _same_mode),
    Ep("job-events", "job", "GET", "/events?object={uid}", events_of),
    # the worker's side of a job: nobody holds these PENDING jobs
    Ep("job-report", "job", "POST", "/works/{uid}/report",
       worker_route((400, "bad_status")), _json({"status": "BOGUS"})),
    Ep("job-upload-result", "job", "PUT", "/works/{uid}/result", worker_route(OK),
       lambda w, obj: {"data": b"not a result"}, fresh=True),
    Ep("job-progress", "job", "POST", "/works/{uid}/progress", worker_route(OK),
       _json({"phase": "booting"})),
    Ep("job-pilot-work", "job", "POST", "/works/{uid}/pilot-work", delegated_only),
    # apps (api/apps.py, services/apps.py)
    Ep("app-show", "app", "GET", "/apps/{uid}", read(ACCESS)),
    Ep("app-submit", "app", "POST", "/works", submit_app,
       lambda w, obj: {"json": {"app": obj["uid"]}}),  # names: tests/security/test_names.py
    Ep("app-delete", "app", "DELETE", "/apps/{uid}", delete, fresh=True,
       modes=MODES + STICKY_MODES),
    Ep("app-chmod", "app", "POST", "/objects/{uid}/chmod", chmod, _same_mode),
    # contexts (api/contexts.py, services/contexts.py)
    Ep("context-show", "context", "GET", "/contexts/{uid}", read(ACCESS)),
    Ep("context-delete", "context", "DELETE", "/contexts/{uid}", delete, fresh=True,
       modes=MODES + STICKY_MODES),
    Ep("context-chmod", "context", "POST", "/objects/{uid}/chmod", chmod, _same_mode),
    Ep("context-in-job", "context", "POST", "/works", uses("r"),
       lambda w, obj: {"json": {"app": w.job_app, "context": obj["uid"]}}),
    # templates (api/templates.py, services/templates.py)
    Ep("template-show", "template", "GET", "/templates/{uid}", read(NOT_ASSIGNED)),
    Ep("template-artifact", "template", "GET", "/templates/{uid}/artifacts/disk",
       read(NOT_ASSIGNED)),
    Ep("template-chunks", "template", "GET", "/templates/{uid}/artifacts/disk/chunks",
       read(NOT_ASSIGNED)),
    Ep("template-publish", "template", "POST", "/templates/{uid}/publish", template_write),
    Ep("template-deprecate", "template", "POST", "/templates/{uid}/deprecate",
       template_write),
    Ep("template-sign", "template", "POST", "/templates/{uid}/signatures", template_write,
       _signature),
    Ep("template-delete", "template-draft", "DELETE", "/templates/{uid}", delete, fresh=True,
       modes=MODES + STICKY_MODES),
    Ep("template-chmod", "template", "POST", "/objects/{uid}/chmod", chmod, _same_mode),
    Ep("template-events", "template", "GET", "/events?object={uid}", events_of),
    Ep("template-submit", "template", "POST", "/works", uses("x"),
       lambda w, obj: {"json": {"template": obj["uid"], "command": "true"}}),
]

_NEW_HOST = {"os": "linux", "arch": "matrix_arch", "cpus": 1, "memory_mb": 1, "disk_mb": 1}

OTHER_ENDPOINTS = [
    # auth (api/auth.py): /ca and the CRL are public; the rest needs a token
    Ep("ca", "", "GET", "/ca", anyone()),
    Ep("health", "", "GET", "/health", anyone()),
    # the ways in: no token needed, and one sent grants nothing more
    Ep("login", "", "POST", "/auth/login", anyone(),
       lambda w, obj: {"json": dict(zip(("login", "password"), w.passwords["t_std"],
                                        strict=True))}, actors=("anon", "super")),
    Ep("login-wrong-password", "", "POST", "/auth/login", anyone((401, "bad_credentials")),
       lambda w, obj: {"json": {"login": w.passwords["t_std"][0], "password": "wrong-1"}},
       actors=("anon",)),
    Ep("x509-challenge", "", "POST", "/auth/x509/challenge",
       anyone((400, "bad_certificate")), _json({"certificate": "not a certificate"}),
       actors=("anon", "super")),
    Ep("x509-login", "", "POST", "/auth/x509/login", anyone((401, "bad_challenge")),
       _json({"certificate": "c", "nonce": "never-issued", "signature": "s"}),
       actors=("anon", "super")),
    Ep("oidc-start", "", "POST", "/auth/oidc/start", anyone((404, "oidc_disabled")),
       _json({"redirect_uri": "http://127.0.0.1:9/cb", "code_challenge": "c" * 43}),
       actors=("anon", "super")),
    Ep("oidc-finish", "", "POST", "/auth/oidc/finish", anyone((401, "bad_challenge")),
       _json({"state": "never-issued", "code": "c", "code_verifier": "v" * 43}),
       actors=("anon", "super")),
    # a token the server never signed (services/users.principal_for, tokens.decode)
    *(Ep(f"forged-token-{what}", "", method, path, lambda a, m: (401, "bad_token"),
         actors=("forged",)) for what, method, path in (
             ("whoami", "GET", "/auth/whoami"), ("list-data", "GET", "/data"),
             ("certs", "GET", "/admin/certs"))),
    Ep("ca-crl", "", "GET", "/ca/crl", anyone()),
    Ep("whoami", "", "GET", "/auth/whoami", authenticated()),
    Ep("logout", "session", "POST", "/auth/logout", authenticated(), fresh=True,
       actors=ACTORS),
    # (a wrong old password would count against the login rate limit of 127.0.0.1)
    Ep("password", "", "POST", "/auth/password", authenticated(),
       _json({"old_password": "not-it-1", "new_password": "x" * 12}), actors=("anon",)),
    # lists: require("list") / require("list_hosts"), no workers
    *(Ep(f"list-{what}", "", "GET", f"/{what}", level_op(OK, "standard"))
      for what in ("data", "works", "apps", "contexts", "templates", "users", "groups",
                   "hosts")),
    Ep("events-all", "", "GET", "/events", whole_log),
    # creation: require("insert_*")
    Ep("new-data", "", "POST", "/data", level_op(CREATED, "standard"),
       _json({"name": "matrix.bin"}), counted="/data"),
    Ep("new-context", "", "POST", "/contexts", level_op(CREATED, "standard"),
       _json({"name": "matrix", "document": {"env": {"A": "1"}}}), counted="/contexts"),
    Ep("new-work", "", "POST", "/works", level_op(CREATED, "standard"),
       lambda w, obj: {"json": {"app": w.job_app}}),
    Ep("new-app", "", "POST", "/apps", level_op(CREATED, "group_admin"),
       _unique(lambda u: {"name": f"app-{u}", "kind": "shared"}), counted="/apps"),
    Ep("new-upload", "", "POST", "/uploads", level_op(CREATED, "group_admin"),
       _unique(lambda u: {"size": 10, "sha256": hashlib.sha256(u.encode()).hexdigest()})),
    Ep("new-template", "", "POST", "/templates",
       level_op((404, "unknown_upload"), "group_admin"),
       _unique(lambda u: {"name": f"t-{u}", "version": "1", "artifacts": [
           {"role": "disk", "format": "qcow2", "upload": str(uuid.uuid4())}]}),
       counted="/templates"),
    Ep("new-group", "", "POST", "/groups", level_op(CREATED, "super"),
       _unique(lambda u: {"name": f"g-{u}"}), counted="/groups"),
    Ep("new-user-standard", "", "POST", "/users", new_user("standard"),
       lambda w, obj: {"json": {"login": f"u-{uuid.uuid4().hex[:10]}", "password": PASSWORD,
                                "rights": "standard", "group": w.group}}, counted="/users"),
    Ep("new-user-group-admin", "", "POST", "/users", new_user("group_admin"),
       lambda w, obj: {"json": {"login": f"u-{uuid.uuid4().hex[:10]}", "password": PASSWORD,
                                "rights": "group_admin", "group": w.group}},
       counted="/users"),
    Ep("enroll-own", "", "POST", "/workers/enroll", enroll("own"), _json({}),
       counted="/users"),
    Ep("enroll-project", "", "POST", "/workers/enroll", enroll("project"),
       lambda w, obj: {"json": {"project": w.group}}, counted="/users"),
    Ep("enroll-public", "", "POST", "/workers/enroll", enroll("public"),
       _json({"public": True}), counted="/users"),
    # user management (services/users.set_enabled)
    *(Ep(f"user-{action}-{target}", target, "POST", f"/users/{{uid}}/{action}",
         manage_user(target), fresh=action == "disable")
      for action in ("disable", "enable") for target in ("t_std", "t_ga", "t_oth")),
    *(Ep(f"user-chmod-{target}", target, "POST", "/objects/{uid}/chmod", user_record(target),
         _json({"mode": "700"})) for target in ("t_std", "t_ga", "t_oth")),
    *(Ep(f"user-events-{target}", target, "GET", "/events?object={uid}",
         user_record(target)) for target in ("t_std", "t_ga", "t_oth")),
    # hosts (services/hosts.py): the public worker's host
    Ep("host-register", "", "POST", "/hosts", level_op(CREATED, "standard", workers=True),
       _unique(lambda u: {"name": f"h-{u}", **_NEW_HOST}), counted="/hosts"),
    Ep("host-heartbeat", "host", "POST", "/hosts/{uid}/heartbeat", own_host(False),
       _json({"running": []})),
    Ep("host-work", "host", "POST", "/hosts/{uid}/work", own_host(True)),
    # resumable uploads (services/uploads.py), owned by "aowner"
    Ep("upload-show", "upload", "GET", "/uploads/{uid}", upload_owner()),
    Ep("upload-append", "upload", "PUT", "/uploads/{uid}", upload_owner(), _chunk, fresh=True),
    Ep("upload-complete", "upload-full", "POST", "/uploads/{uid}/complete", upload_owner(),
       fresh=True),
    Ep("upload-abort", "upload", "DELETE", "/uploads/{uid}", upload_owner(), fresh=True),
    # client certificates (api/admin.py, auth/x509.py): require("manage_certs"), super only
    Ep("certs-list", "", "GET", "/admin/certs", level_op(OK, "super")),
    Ep("certs-issue", "", "POST", "/admin/certs", level_op((404, "unknown_user"), "super"),
       _json({"login": "nobody-here", "csr": "not a csr"})),
    Ep("certs-revoke", "", "POST", "/admin/certs/0abc/revoke",
       level_op((404, "unknown_certificate"), "super")),
]

CASES = [(ep, mode, actor) for ep in OBJECT_ENDPOINTS for mode in ep.modes
         for actor in ep.actors]
CASES += [(ep, "-", actor) for ep in OTHER_ENDPOINTS for actor in ep.actors]


# --- the world ------------------------------------------------------------------------------


@dataclass
class World:
    server: ServerProcess
    admin: Client
    group: str
    other_group: str
    clients: dict[str, Client]
    passwords: dict[str, tuple[str, str]]
    users: dict[str, dict[str, Any]]
    job_app: str
    key: Ed25519PrivateKey
    tmp: Path
    vm: dict[str, str] = field(default_factory=dict)  # the VM job, its host and token
    http: requests.Session = field(default_factory=requests.Session)
    shared: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def call(self, actor: str, method: str, path: str, token: str | None = None,
             **kw: Any) -> requests.Response:
        headers = dict(kw.pop("headers", None) or {})
        if actor == "vmcred":
            token = self.vm_token()
        if actor == "forged":
            token = "forged.token.value"
        token = token or (self.clients[actor].token if actor != "anon" else None)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return self.http.request(method, f"{self.server.url}/api/v1{path}", headers=headers,
                                 verify=str(self.server.ca), timeout=60, **kw)

    def vm_token(self) -> str:
        """The delegated credential of a running VM job of "aowner" (taken again if its
        host was thought lost between two cases: hosts here beat only when asked)."""
        vw = self.clients["vmworker"]
        if self.vm:
            vw.heartbeat(self.vm["host"], [self.vm["job"]])
            if self.admin.get_work(self.vm["job"])["status"] == "RUNNING":
                return self.vm["token"]
        else:
            self.vm["host"] = vw.register_host({
                "name": "matrix-vm-host", **_NEW_HOST, "memory_mb": 4096, "disk_mb": 100000,
                "hypervisors": {"libvirt": {"usable": True, "accel": "tcg", "reason": "test"}}})[
                "uid"]
        t = self.make("template", "700")
        job = self.clients["aowner"].submit(template=t["uid"], command="true",
                                            access_rights="700")
        desc = vw.request_work(self.vm["host"])["work"]
        assert desc["uid"] == job["uid"], desc
        self.vm.update(job=job["uid"], token=desc["delegated_token"])
        return self.vm["token"]

    def owner_of(self, kind: str) -> Client:
        return self.clients["aowner" if kind.split("-")[0] in ADMIN_KINDS else "owner"]

    def make(self, kind: str, mode: str) -> dict[str, Any]:
        """A new object of ``kind`` with access rights ``mode``, owned as ACTORS says."""
        owner = self.owner_of(kind)
        content = uuid.uuid4().bytes * 8
        sha = hashlib.sha256(content).hexdigest()
        if kind in ("data", "data-empty"):
            d = owner.post("/data", {"name": "m.bin", "size": len(content), "sha256": sha,
                                     "access_rights": mode})
            if kind == "data":
                owner.request("PUT", f"/data/{d['uid']}/content", data=content)
                d = owner.get_data(d["uid"])
            return {**d, "_content": content}
        if kind == "job":
            return owner.submit(self.job_app, access_rights=mode)
        if kind == "app":
            return owner.create_app(f"app-{uuid.uuid4().hex[:10]}", kind="shared",
                                    access_rights=mode)
        if kind == "context":
            return owner.create_context("m", {"env": {"A": "1"}}, access_rights=mode)
        if kind in ("template", "template-draft"):
            path = self.tmp / f"{uuid.uuid4().hex}.qcow2"
            path.write_bytes(os.urandom(4096))
            up = owner.upload_file(path)
            t = owner.create_template({
                "name": f"t-{uuid.uuid4().hex[:10]}", "version": "1",
                "artifacts": [{"role": "disk", "format": "qcow2", "upload": up["uid"]}],
                "access_rights": mode})
            return owner.publish_template(t["uid"]) if kind == "template" else t
        if kind in ("upload", "upload-full"):
            up = owner.create_upload(len(content), sha)
            if kind == "upload-full":
                owner.request("PUT", f"/uploads/{up['uid']}", data=content, headers={
                    "Content-Range": f"bytes 0-{len(content) - 1}/{len(content)}"})
            return {**up, "_content": content}
        if kind == "session":
            return {}
        if kind in ("t_std", "t_ga", "t_oth", "host"):
            return self.users[kind]
        raise AssertionError(kind)

    def obj(self, ep: Ep, mode: str) -> dict[str, Any]:
        if not ep.kind:
            return {}
        if ep.fresh:
            return self.make(ep.kind, mode)
        key = (ep.kind, mode)
        if key not in self.shared:
            self.shared[key] = self.make(ep.kind, mode)
        return self.shared[key]

    def state(self, kind: str, obj: dict[str, Any]) -> Any:
        """What the super user sees of the object (None when it is gone)."""
        base = kind.split("-")[0]
        paths = {"data": "/data/{}", "job": "/works/{}", "app": "/apps/{}",
                 "context": "/contexts/{}", "template": "/templates/{}"}
        try:
            if base in paths:
                return self.admin.get(paths[base].format(obj["uid"]))
            if kind in ("t_std", "t_ga", "t_oth"):
                return self.admin.user_by_login(obj["login"])["enabled"]
            if base == "upload":
                return self.owner_of(kind).get_upload(obj["uid"])
        except ApiError as e:
            if e.status == 404:
                return None
            raise
        return None


def _login(server: ServerProcess, login: str, password: str) -> Client:
    return server.client(login, password)


@pytest.fixture(scope="module")
def world(shared_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> World:
    admin = shared_server.client()
    group, other_group = f"g-{uuid.uuid4().hex[:8]}", f"o-{uuid.uuid4().hex[:8]}"
    admin.create_group(group)
    admin.create_group(other_group)
    specs = {"owner": ("standard", group), "member": ("standard", group),
             "other": ("standard", other_group), "gadmin": ("group_admin", group),
             "ogadmin": ("group_admin", other_group), "aowner": ("group_admin", group),
             "t_std": ("standard", group), "t_ga": ("group_admin", group),
             "t_oth": ("standard", other_group)}
    clients, passwords, users = {"super": admin}, {}, {}
    for role, (rights, grp) in specs.items():
        login = f"{role.replace('_', '')}-{uuid.uuid4().hex[:8]}"
        users[role] = admin.create_user(login, PASSWORD, rights, grp)
        passwords[role] = (login, PASSWORD)
        if not role.startswith("t_"):
            clients[role] = _login(shared_server, login, PASSWORD)
    passwords["super"] = ("admin", shared_server.password_file.read_text())
    for role, cred in (("worker", admin.enroll_worker(public=True)),
                       ("gworker", admin.enroll_worker(project=group))):
        passwords[role] = (cred["login"], cred["password"])
        clients[role] = _login(shared_server, cred["login"], cred["password"])
    users["host"] = clients["worker"].register_host({"name": "matrix-host", **_NEW_HOST})
    vm_cred = clients["aowner"].enroll_worker()  # runs only aowner's jobs
    clients["vmworker"] = _login(shared_server, vm_cred["login"], vm_cred["password"])
    job_app = f"jobs-{uuid.uuid4().hex[:8]}"  # a public shared app no worker provides
    admin.create_app(job_app, kind="shared")
    return World(shared_server, admin, group, other_group, clients, passwords, users, job_app,
                 Ed25519PrivateKey.generate(), tmp_path_factory.mktemp("matrix"))


# --- the test -------------------------------------------------------------------------------


def _check_effect(w: World, ep: Ep, obj: dict[str, Any], before: Any,
                  resp: requests.Response) -> None:
    """What an allowed call did (and, for the calls that consume state, restore it)."""
    after = w.state(ep.kind, obj)
    if ep.method == "DELETE" and ep.kind != "upload":
        assert after is None, after
    elif ep.name == "job-abort":
        assert after["status"] == "ABORTED"
    elif ep.name == "job-hold":
        assert after["status"] == "WAITING"
    elif ep.name.endswith("-chmod"):
        assert resp.json()["access_rights"] == obj["access_rights"] == after["access_rights"]
    elif ep.name == "data-upload":
        assert after["status"] == "available"
    elif ep.name == "template-deprecate":
        assert after["status"] == "deprecated"
        w.admin.publish_template(obj["uid"])  # shared: put it back as it was
    elif ep.name.startswith("user-disable"):
        assert after is False
    elif ep.name == "upload-complete":
        assert after["status"] == "complete"


@pytest.mark.parametrize("ep,mode,actor", CASES,
                         ids=[f"{ep.name}-{mode}-{actor}" for ep, mode, actor in CASES])
def test_authorization(world: World, ep: Ep, mode: str, actor: str) -> None:
    expected = delegated(ep) if actor == "vmcred" else ep.rule(actor, mode)
    obj = world.obj(ep, mode)
    token = None
    if ep.kind == "session" and actor != "anon":
        token = _login(world.server, *world.passwords[actor]).token
    before = world.state(ep.kind, obj)
    listed = len(world.admin.get(ep.counted)) if ep.counted else None
    kw = ep.body(world, obj) if ep.body else {}
    path = ep.path.format(uid=obj.get("uid", ""), name=obj.get("name", ""))
    who = "aowner" if actor == "owner" and ep.kind.split("-")[0] in ADMIN_KINDS else actor
    resp = world.call(who, ep.method, path, token=token, **kw)
    got: Outcome = (resp.status_code, None if resp.status_code < 300
                    else resp.json().get("error"))
    assert got == expected, (ep.name, mode, actor, resp.status_code, resp.text[:300])
    if resp.status_code < 300:
        _check_effect(world, ep, obj, before, resp)
    elif ep.kind:
        assert world.state(ep.kind, obj) == before  # a refusal changes nothing
    if ep.counted:
        assert len(world.admin.get(ep.counted)) == listed + (resp.status_code == 201)
    if ep.kind == "session" and actor != "anon":
        again = world.call(actor, "GET", "/auth/whoami", token=token)
        assert (again.status_code, again.json()["error"]) == (401, "token_revoked")
    if ep.name.startswith("user-disable") and resp.status_code == 200:
        world.admin.set_user_enabled(obj["uid"], True)
