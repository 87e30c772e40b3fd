"""Bad input through the real HTTPS API: every refusal has the right status, a JSON error code
and a message that names the problem, and leaves the server's state as it was."""

from __future__ import annotations

import http.client
import json
import ssl
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.processes import ADMIN_PASSWORD, ServerProcess
from xwvm.client.sdk import ApiError, Client

MiB = 1024 * 1024


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _call(server: ServerProcess, method: str, path: str, token: str | None = None,
          headers: dict[str, str] | None = None, **kw: Any) -> requests.Response:
    h = dict(headers or {})
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    return requests.request(method, f"{server.url}/api/v1{path}", headers=h,
                            verify=str(server.ca), timeout=30, **kw)


def _error(resp: requests.Response, status: int, code: str, *words: str,
           hidden: tuple[str, ...] = ()) -> dict[str, Any]:
    """The response is a JSON error with this status and code whose message has ``words``
    and never echoes the ``hidden`` values that were sent (issue 12: errors name the
    problem, not the value)."""
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers["Content-Type"].startswith("application/json"), resp.headers
    body = resp.json()
    assert body["error"] == code, body
    for word in words:
        assert word in body["message"], (word, body)
    for value in hidden:
        assert value not in resp.text, (value, body)
    return body


def _state(admin: Client) -> tuple[list[dict[str, Any]], ...]:
    """What a refused request must not change: every job, data, app and user."""
    return admin.list_works(), admin.list_data(), admin.list_apps(), admin.list_users()


def _events_since(admin: Client, since: int) -> list[dict[str, Any]]:
    return admin.events(since=since)


def _last_event_id(admin: Client) -> int:
    last = 0
    while True:
        page = admin.get("/events", params={"since": last, "limit": 10000})
        if not page:
            return last
        last = page[-1]["id"]


@pytest.fixture(scope="module")
def admin(shared_server: ServerProcess) -> Client:
    return shared_server.client()


@pytest.fixture(scope="module")
def app_name(admin: Client) -> str:
    """A shared app no worker of this module provides: its jobs stay PENDING."""
    name = _name("errapp")
    admin.create_app(name, kind="shared")
    return name


@pytest.fixture(scope="module")
def data_uid(admin: Client, shared_server: ServerProcess) -> str:
    d = admin.post("/data", {"name": "input.txt"})
    resp = _call(shared_server, "PUT", f"/data/{d['uid']}/content", admin.token, data=b"in")
    assert resp.status_code == 200, resp.text
    return d["uid"]


# --- malformed bodies -------------------------------------------------------------------


@pytest.mark.parametrize("body,ctype", [
    (b"{not json", "application/json"),
    (b'{"name": "x",}', "application/json"),
    (b"", "application/json"),
    (b"null", "application/json"),
    (b'{"name": "x"}', "text/plain"),
    (b"\xff\xfe\x00garbage", "application/json"),
])
def test_malformed_json_body_is_refused(shared_server: ServerProcess, admin: Client,
                                        body: bytes, ctype: str) -> None:
    before = _state(admin)
    resp = _call(shared_server, "POST", "/data", admin.token, data=body,
                 headers={"Content-Type": ctype})
    _error(resp, 400, "malformed_json", "JSON object", "Content-Type")
    assert _state(admin) == before


@pytest.mark.parametrize("body", [[1, 2], "a string", 42, True, [{"name": "x"}]])
def test_non_object_json_is_refused(shared_server: ServerProcess, admin: Client,
                                    body: Any) -> None:
    before = _state(admin)
    resp = _call(shared_server, "POST", "/data", admin.token, json=body)
    err = _error(resp, 400, "invalid_body", "is not of type 'object'")
    assert err["details"][0]["path"] == "/"
    assert _state(admin) == before


def test_job_without_app_or_template_is_refused(shared_server: ServerProcess,
                                                admin: Client) -> None:
    before = _state(admin)
    resp = _call(shared_server, "POST", "/works", admin.token, json={"args": ["a"]})
    _error(resp, 400, "app_or_template", "either an app (native) or a template (VM job)")
    resp = _call(shared_server, "POST", "/works", admin.token,
                 json={"template": "base", "args": ["a"]})
    _error(resp, 400, "no_command", "needs a command")
    assert _state(admin) == before


@pytest.mark.parametrize("path,body,missing", [
    ("/data", {"size": 3}, "name"),
    ("/users", {"login": "nobody-x", "password": "p" * 12}, "rights"),
    ("/auth/login", {"login": "admin"}, "password"),
    ("/objects/{data}/chmod", {}, "mode"),
])
def test_missing_required_field_is_named(shared_server: ServerProcess, admin: Client,
                                         data_uid: str, path: str, body: dict[str, Any],
                                         missing: str) -> None:
    before = _state(admin)
    resp = _call(shared_server, "POST", path.format(data=data_uid), admin.token, json=body)
    _error(resp, 400, "invalid_body", f"'{missing}' is a required property")
    assert _state(admin) == before


@pytest.mark.parametrize("extra,paths", [
    ({"args": [1, "ok", None]}, ["/args/0", "/args/2"]),
    ({"args": "not-a-list"}, ["/args"]),
    ({"env": {"GOOD": "x", "BAD": 3}}, ["/env/BAD"]),
    ({"max_retries": "5"}, ["/max_retries"]),
    ({"max_retries": -1}, ["/max_retries"]),
    ({"wall_clock_s": 0}, ["/wall_clock_s"]),
    ({"hold": "yes"}, ["/hold"]),
    ({"inputs": [{"data": 7, "name": "a"}]}, ["/inputs/0/data"]),
    ({"inputs": [{"name": "a"}]}, ["/inputs/0"]),
    ({"label": "x" * 256}, ["/label"]),
    ({"args": ["a"] * 1025}, ["/args"]),
    ({"env": {f"V{i}": "x" for i in range(257)}}, ["/env"]),
    ({"network": "lan"}, ["/network"]),
    ({"pilot_idle_s": 0}, ["/pilot_idle_s"]),
])
def test_wrong_types_name_the_json_path(shared_server: ServerProcess, admin: Client,
                                        app_name: str, extra: dict[str, Any],
                                        paths: list[str]) -> None:
    before = _state(admin)
    resp = _call(shared_server, "POST", "/works", admin.token, json={"app": app_name, **extra})
    err = _error(resp, 400, "invalid_body", paths[0])
    assert [d["path"] for d in err["details"]] == paths
    assert all(d["message"] for d in err["details"])
    assert _state(admin) == before


@pytest.mark.parametrize("path,body,field", [
    ("/works", {"app": "{app}", "priority": 3}, "priority"),
    ("/data", {"name": "x", "owner": "me"}, "owner"),
    ("/works", {"app": "{app}", "inputs": [{"data": "d", "name": "n", "mode": "r"}]}, "mode"),
    ("/auth/login", {"login": "admin", "password": "x", "otp": "1"}, "otp"),
])
def test_unknown_field_is_refused(shared_server: ServerProcess, admin: Client, app_name: str,
                                  path: str, body: dict[str, Any], field: str) -> None:
    if body.get("app") == "{app}":
        body = {**body, "app": app_name}
    before = _state(admin)
    resp = _call(shared_server, "POST", path, admin.token, json=body)
    _error(resp, 400, "invalid_body", "Additional properties", f"'{field}'")
    assert _state(admin) == before


def _send_partly(server: ServerProcess, path: str, token: str | None, length: int,
                 first: bytes) -> tuple[int, dict[str, Any]]:
    """Announce ``length`` bytes of JSON, send only ``first``, and read the answer: a server
    that refuses by the Content-Length must answer without waiting for the rest."""
    ctx = ssl.create_default_context(cafile=str(server.ca))
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=ctx, timeout=30)
    try:
        conn.putrequest("POST", f"/api/v1{path}")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(length))
        if token:
            conn.putheader("Authorization", f"Bearer {token}")
        conn.endheaders()
        conn.send(first)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_oversized_json_body_is_refused(shared_server: ServerProcess, admin: Client) -> None:
    before = _state(admin)
    length = MiB + 10
    status, body = _send_partly(shared_server, "/data", admin.token, length,
                                b'{"name": "' + b"x" * 65536)
    assert (status, body["error"]) == (413, "too_large"), body
    assert str(length) in body["message"] and str(MiB) in body["message"], body
    assert _state(admin) == before
    # Just under the limit is not "too large" (it fails the schema's name length instead).
    ok = b'{"name": "' + b"x" * (MiB - 100) + b'"}'
    resp = _call(shared_server, "POST", "/data", admin.token, data=ok,
                 headers={"Content-Type": "application/json"})
    _error(resp, 400, "invalid_body", "/name")
    assert _state(admin) == before


# --- unknown and malformed ids, routes and methods ---------------------------------------


@pytest.mark.parametrize("method,path,code", [
    ("GET", "/works/{u}", "unknown_job"),
    ("DELETE", "/works/{u}", "unknown_job"),
    ("POST", "/works/{u}/abort", "unknown_job"),
    ("POST", "/works/{u}/release", "unknown_job"),
    ("GET", "/works/{u}/result", "unknown_job"),
    ("GET", "/data/{u}", "unknown_data"),
    ("GET", "/data/{u}/content", "unknown_data"),
    ("DELETE", "/data/{u}", "unknown_data"),
    ("PUT", "/data/{u}/content", "unknown_data"),
    ("GET", "/apps/{u}", "unknown_app"),
    ("DELETE", "/apps/{u}", "unknown_app"),
    ("POST", "/objects/{u}/chmod", "unknown_object"),
    ("GET", "/events?object={u}", "unknown_object"),
    ("POST", "/hosts/{u}/heartbeat", "unknown_host"),
])
def test_unknown_uid_is_404(shared_server: ServerProcess, admin: Client, method: str,
                            path: str, code: str) -> None:
    uid = str(uuid.uuid4())
    kw: dict[str, Any] = {}
    if method == "POST":
        kw["json"] = {"mode": "700"} if "chmod" in path else {}
    elif method == "PUT":
        kw["data"] = b"abc"
    before = _state(admin)
    resp = _call(shared_server, method, path.format(u=uid), admin.token, **kw)
    _error(resp, 404, code, uid)
    assert _state(admin) == before


def test_submit_to_unknown_app_is_404(shared_server: ServerProcess, admin: Client) -> None:
    before = _state(admin)
    missing = _name("no-such-app")
    resp = _call(shared_server, "POST", "/works", admin.token, json={"app": missing})
    body = _error(resp, 404, "unknown_app")
    assert missing not in body["message"]  # a submitted value is never echoed
    assert _state(admin) == before


@pytest.mark.parametrize("method,path,what", [
    ("GET", "/works/not-a-uuid", "job"),
    ("GET", "/works?uid=not-a-uuid", "job"),
    ("POST", "/works/not-a-uuid/abort", "job"),
    ("GET", "/data/not-a-uuid", "data"),
    ("GET", "/data/not-a-uuid/content", "data"),
    ("DELETE", "/data/not-a-uuid", "data"),
    ("POST", "/objects/not-a-uuid/chmod", "object"),
    ("GET", "/events?object=not-a-uuid", "object"),
])
def test_non_uuid_id_is_400(shared_server: ServerProcess, admin: Client, method: str,
                            path: str, what: str) -> None:
    before = _state(admin)
    kw = {"json": {"mode": "700"}} if method == "POST" else {}
    resp = _call(shared_server, method, path, admin.token, **kw)
    _error(resp, 400, "bad_uid", what, "not a UUID", hidden=("not-a-uuid",))
    assert _state(admin) == before


def test_bad_query_parameters(shared_server: ServerProcess, admin: Client) -> None:
    _error(_call(shared_server, "GET", "/works?status=SLEEPING", admin.token), 400,
           "bad_status", hidden=("SLEEPING",))
    _error(_call(shared_server, "GET", "/events?since=yesterday", admin.token), 400,
           "bad_query", "integers")


@pytest.mark.parametrize("path", ["/api/v1/nothing-here", "/api/v2/works", "/", "/api/v1/works/"
                                  "00000000-0000-0000-0000-000000000000/explode"])
def test_unknown_route_is_json_404(shared_server: ServerProcess, admin: Client,
                                   path: str) -> None:
    resp = requests.get(shared_server.url + path, verify=str(shared_server.ca), timeout=30,
                        headers={"Authorization": f"Bearer {admin.token}"})
    _error(resp, 404, "not_found", "not found")


@pytest.mark.parametrize("method,path", [
    ("DELETE", "/auth/login"), ("PUT", "/works"), ("PATCH", "/data"), ("GET", "/auth/logout"),
    ("POST", "/data/00000000-0000-0000-0000-000000000000"),
])
def test_wrong_method_is_json_405(shared_server: ServerProcess, admin: Client, method: str,
                                  path: str) -> None:
    before = _state(admin)
    resp = _call(shared_server, method, path, admin.token)
    _error(resp, 405, "method_not_allowed", "method is not allowed")
    assert "Allow" in resp.headers
    assert _state(admin) == before


# --- tokens and logins -------------------------------------------------------------------


def _flip(text: str, index: int) -> str:
    new = "A" if text[index] != "A" else "B"
    return text[:index] + new + text[index + 1:]


def test_missing_bearer_token_is_401(shared_server: ServerProcess, admin: Client) -> None:
    before = _state(admin)
    for headers in ({}, {"Authorization": f"Basic {admin.token}"},
                    {"Authorization": admin.token or ""}):
        resp = _call(shared_server, "POST", "/data", headers=headers, json={"name": "x"})
        _error(resp, 401, "no_token", "bearer token")
    assert _state(admin) == before


def test_garbled_and_tampered_tokens_are_401(shared_server: ServerProcess,
                                             admin: Client) -> None:
    token = admin.token
    assert token is not None
    prefix, payload, mac = token.split(".")
    bad = {
        "empty": "",
        "garbage": "garbage",
        "two parts": f"{prefix}.{payload}",
        "four parts": f"{token}.x",
        "other prefix": f"xwt2.{payload}.{mac}",
        "payload flipped": f"{prefix}.{_flip(payload, len(payload) // 2)}.{mac}",
        "payload flipped first": f"{prefix}.{_flip(payload, 0)}.{mac}",
        "mac flipped": f"{prefix}.{payload}.{_flip(mac, len(mac) // 2)}",
        "mac flipped last": f"{prefix}.{payload}.{_flip(mac, len(mac) - 1)}",
        "mac truncated": f"{prefix}.{payload}.{mac[:-4]}",
        "mac of nothing": f"{prefix}..{mac}",
        "non-ascii mac": f"{prefix}.{payload}.{mac[:-1]}\u00e9",
        "non-ascii payload": f"{prefix}.{payload}\u00e9.{mac}",
    }
    before = _state(admin)
    for label, tok in bad.items():
        resp = _call(shared_server, "POST", "/data", tok, json={"name": "x"})
        assert resp.status_code == 401, (label, resp.status_code, resp.text)
        body = resp.json()
        assert body["error"] in ("bad_token", "no_token"), (label, body)
        if tok:
            assert body["error"] == "bad_token", (label, body)
            assert "token" in body["message"], (label, body)
    assert _state(admin) == before
    # The untampered token still works.
    assert _call(shared_server, "GET", "/auth/whoami", token).json()["login"] == "admin"


def test_expired_token_is_401(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path, env={"XWVM_TOKEN_LIFETIME_S": "1"}).init().start()
    try:
        c = srv.client()
        token = c.token
        time.sleep(2.1)
        resp = _call(srv, "GET", "/auth/whoami", token)
        _error(resp, 401, "token_expired", "expired", "log in again")
        resp = _call(srv, "POST", "/data", token, json={"name": "late"})
        _error(resp, 401, "token_expired")
        fresh = srv.client()
        assert fresh.list_data() == []
    finally:
        srv.stop()


def test_token_is_revoked_by_logout(shared_server: ServerProcess, admin: Client) -> None:
    login = _name("leaver")
    admin.create_user(login, "leaver-password", "standard")
    c = shared_server.client(login, "leaver-password")
    token = c.token
    assert _call(shared_server, "GET", "/auth/whoami", token).status_code == 200
    c.logout()
    before = _state(admin)
    for method, path, kw in (("GET", "/auth/whoami", {}), ("GET", "/works", {}),
                             ("POST", "/data", {"json": {"name": "x"}}),
                             ("POST", "/auth/logout", {})):
        resp = _call(shared_server, method, path, token, **kw)
        _error(resp, 401, "token_revoked", "revoked", "log in again")
    assert _state(admin) == before
    # A fresh login of the same user works; the old token stays revoked.
    again = shared_server.client(login, "leaver-password")
    assert again.whoami()["login"] == login
    _error(_call(shared_server, "GET", "/auth/whoami", token), 401, "token_revoked")


@pytest.mark.parametrize("who", ["admin", "nobody-at-all"])
def test_wrong_password_is_401_and_logged(shared_server: ServerProcess, admin: Client,
                                          who: str) -> None:
    since = _last_event_id(admin)
    resp = _call(shared_server, "POST", "/auth/login",
                 json={"login": who, "password": ADMIN_PASSWORD + "-wrong"})
    body = _error(resp, 401, "bad_credentials", "wrong login or password")
    assert "token" not in body
    refused = [e for e in _events_since(admin, since) if e["kind"] == "login_refused"]
    assert len(refused) == 1, refused
    assert who in refused[0]["detail"]
    assert not [e for e in _events_since(admin, since) if e["kind"] == "login"]


def test_event_log_queries_are_checked(shared_server: ServerProcess, admin: Client) -> None:
    login = _name("reader")
    admin.create_user(login, "reader-password", "standard")
    c = shared_server.client(login, "reader-password")
    # A standard user reads the log of their own objects only, never the whole log.
    with pytest.raises(ApiError) as e:
        c.events()
    assert (e.value.status, e.value.code) == (400, "bad_query")
    assert "object" in e.value.message
    mine = c.post("/data", {"name": "mine", "access_rights": "700"})
    assert [ev["kind"] for ev in c.events(mine["uid"])] == ["data_created"]
    theirs = admin.post("/data", {"name": "theirs", "access_rights": "700"})
    with pytest.raises(ApiError) as e:
        c.events(theirs["uid"])
    assert (e.value.status, e.value.code) == (403, "forbidden_access")


@pytest.mark.parametrize("probe,path", [
    ({"usable": True, "reason": "r" * 4097}, "/hypervisors/libvirt/reason"),
    ({"usable": True, "version": "v" * 257}, "/hypervisors/libvirt/version"),
    ({"usable": True, "networks": ["server"] * 17}, "/hypervisors/libvirt/networks"),
    ({"usable": True, "limits": {"cpus": -1}}, "/hypervisors/libvirt/limits/cpus"),
    ({"usable": True, "extra": ["nested"]}, "/hypervisors/libvirt/extra"),
    ({"reason": "no usable"}, "/hypervisors/libvirt"),
])
def test_host_facts_are_bounded_by_the_schema(shared_server: ServerProcess, admin: Client,
                                              probe: dict[str, Any], path: str) -> None:
    cred = admin.enroll_worker(public=True)
    worker = shared_server.client(cred["login"], cred["password"])
    body = {"name": _name("host"), "os": "linux", "arch": "x86_64", "cpus": 1,
            "memory_mb": 1024, "disk_mb": 1024, "hypervisors": {"libvirt": probe}}
    _error(_call(shared_server, "POST", "/hosts", worker.token, json=body), 400,
           "invalid_body", path)
    many = {**body, "hypervisors": {f"hv{i}": {"usable": False} for i in range(17)}}
    _error(_call(shared_server, "POST", "/hosts", worker.token, json=many), 400,
           "invalid_body", "/hypervisors")


@pytest.mark.parametrize("artifact,path", [
    ({"role": "bios", "format": "raw"}, "/artifacts/0/role"),
    ({"role": "disk", "format": "linux-kernel"}, "/artifacts/0/format"),
    ({"role": "kernel", "format": "qcow2"}, "/artifacts/0/format"),
])
def test_template_artifact_role_and_format_are_schema_checked(
        shared_server: ServerProcess, admin: Client, artifact: dict[str, Any],
        path: str) -> None:
    before = _state(admin)
    body = {"name": _name("tpl"), "version": "1",
            "artifacts": [{**artifact, "upload": str(uuid.uuid4())}]}
    _error(_call(shared_server, "POST", "/templates", admin.token, json=body), 400,
           "invalid_body", path)
    assert _state(admin) == before


# --- job transitions ---------------------------------------------------------------------


def _run_to_completion(shared_server: ServerProcess, admin: Client, tmp_path: Path) -> str:
    """A job really run by a worker account: submitted, assigned, results uploaded, done."""
    name = _name("done-app")
    admin.create_app(name, kind="shared")
    job = admin.submit(name)
    cred = admin.enroll_worker(public=True)
    worker = shared_server.client(cred["login"], cred["password"])
    host = worker.register_host({"name": _name("host"), "os": "linux", "arch": "x86_64",
                                 "cpus": 1, "memory_mb": 1024, "disk_mb": 1024,
                                 "shared_apps": [name]})
    assert worker.request_work(host["uid"])["work"]["uid"] == job["uid"]
    result = tmp_path / "result.tar.gz"
    result.write_bytes(b"results")
    worker.upload_result(job["uid"], result)
    assert worker.report(job["uid"], "COMPLETED", 0)["status"] == "COMPLETED"
    return job["uid"]


def _refused_transition(shared_server: ServerProcess, admin: Client, uid: str, action: str,
                        src: str, dst: str) -> dict[str, Any]:
    since = _last_event_id(admin)
    before = _state(admin)
    resp = _call(shared_server, "POST", f"/works/{uid}/{action}", admin.token)
    body = _error(resp, 409, "illegal_transition", uid, src)
    assert admin.get_work(uid)["status"] == src
    assert _state(admin) == before
    return {"body": body, "events": admin.events(uid, since=since)}


@pytest.mark.parametrize("final", ["ABORTED", "COMPLETED"])
def test_abort_of_a_finished_job_is_409_and_logged(shared_server: ServerProcess,
                                                   admin: Client, app_name: str,
                                                   tmp_path: Path, final: str) -> None:
    if final == "ABORTED":
        uid = admin.submit(app_name)["uid"]
        assert admin.work_action(uid, "abort")["status"] == "ABORTED"
    else:
        uid = _run_to_completion(shared_server, admin, tmp_path)
    out = _refused_transition(shared_server, admin, uid, "abort", final, "ABORTED")
    body = out["body"]
    assert body["details"] == {"from": final, "to": "ABORTED", "allowed": []}
    assert "none: it is final" in body["message"]
    refused = [e for e in out["events"] if e["kind"] == "transition_refused"]
    assert [(e["from"], e["to"]) for e in refused] == [(final, "ABORTED")], out["events"]


def test_hold_of_an_aborted_job_lists_no_moves(shared_server: ServerProcess, admin: Client,
                                               app_name: str) -> None:
    uid = admin.submit(app_name)["uid"]
    admin.work_action(uid, "abort")
    out = _refused_transition(shared_server, admin, uid, "hold", "ABORTED", "WAITING")
    assert out["body"]["details"]["allowed"] == []


def test_release_of_a_pending_job_is_409(shared_server: ServerProcess, admin: Client,
                                         app_name: str) -> None:
    uid = admin.submit(app_name)["uid"]
    assert admin.get_work(uid)["status"] == "PENDING"
    out = _refused_transition(shared_server, admin, uid, "release", "PENDING", "PENDING")
    assert "WAITING" in out["body"]["message"]
    # Held then released is fine, and a second release is refused again.
    assert admin.work_action(uid, "hold")["status"] == "WAITING"
    assert admin.work_action(uid, "release")["status"] == "PENDING"
    _refused_transition(shared_server, admin, uid, "release", "PENDING", "PENDING")


def test_unknown_job_action_is_404(shared_server: ServerProcess, admin: Client,
                                   app_name: str) -> None:
    uid = admin.submit(app_name)["uid"]
    resp = _call(shared_server, "POST", f"/works/{uid}/explode", admin.token)
    _error(resp, 404, "not_found")
    assert admin.get_work(uid)["status"] == "PENDING"


# --- submission checks -------------------------------------------------------------------


@pytest.mark.parametrize("env", [{"1ABC": "x"}, {"A-B": "x"}, {"": "x"}, {"A B": "x"},
                                 {"OK": "1", "BAD=NAME": "2"}, {"\u00c9T\u00c9": "x"},
                                 {"PATH\n": "x"}, {"OK": "1", "LD_PRELOAD\n": "x"}])
def test_bad_env_var_names(shared_server: ServerProcess, admin: Client, app_name: str,
                           env: dict[str, str]) -> None:
    before = _state(admin)
    resp = _call(shared_server, "POST", "/works", admin.token, json={"app": app_name, "env": env})
    bad = next(k for k in env if k != "OK")
    _error(resp, 400, "bad_env", "environment variable", hidden=(bad,) if bad.strip() else ())
    assert _state(admin) == before


@pytest.mark.parametrize("names,code,named", [
    (["a.txt", "a.txt"], "duplicate_input", "same name"),
    (["dir/x", "dir/x"], "duplicate_input", "same name"),
    (["../etc/passwd"], "bad_input_name", "'../etc/passwd'"),
    (["a/../../b"], "bad_input_name", "'a/../../b'"),
    (["ok", ".."], "bad_input_name", "'..'"),
    (["/etc/passwd"], "bad_input_name", "'/etc/passwd'"),
    ([""], "bad_input_name", "''"),
    (["a\nb"], "bad_input_name", "input name"),
    (["a.txt\n"], "bad_input_name", "input name"),
])
def test_bad_input_names(shared_server: ServerProcess, admin: Client, app_name: str,
                         data_uid: str, names: list[str], code: str, named: str) -> None:
    before = _state(admin)
    inputs = [{"data": data_uid, "name": n} for n in names]
    resp = _call(shared_server, "POST", "/works", admin.token,
                 json={"app": app_name, "inputs": inputs})
    if named.startswith("'"):  # a value sent: named by its field, never echoed
        value = named.strip("'")
        _error(resp, 400, code, hidden=(value,) if value not in ("", "..") else ())
    else:
        _error(resp, 400, code, named)
    assert _state(admin) == before


def test_submit_with_unknown_input_creates_no_job(shared_server: ServerProcess, admin: Client,
                                                  app_name: str, data_uid: str) -> None:
    before = _state(admin)
    missing = str(uuid.uuid4())
    inputs = [{"data": data_uid, "name": "a"}, {"data": missing, "name": "b"}]
    resp = _call(shared_server, "POST", "/works", admin.token,
                 json={"app": app_name, "inputs": inputs})
    _error(resp, 404, "unknown_data", missing)
    assert _state(admin) == before


@pytest.mark.parametrize("extra,code", [
    ({"listen_port": 0}, "bad_port"), ({"listen_port": 70000}, "bad_port"),
    ({"expected_host": "nope"}, "bad_uid"), ({"access_rights": "rwx"}, "bad_mode"),
])
def test_bad_submit_options(shared_server: ServerProcess, admin: Client, app_name: str,
                            extra: dict[str, Any], code: str) -> None:
    before = _state(admin)
    resp = _call(shared_server, "POST", "/works", admin.token, json={"app": app_name, **extra})
    _error(resp, 400, code)
    assert _state(admin) == before


# --- chmod -------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["999", "8", "75", "77777", "7777", "2755", "u+q", "x+r",
                                  "rwx", "g+rx;o-w", "u+r,", "a=r x", "-0755", "0x1ed"])
def test_bad_chmod_spec_is_refused(shared_server: ServerProcess, admin: Client,
                                   spec: str) -> None:
    d = admin.post("/data", {"name": "chmod-target", "access_rights": "750"})
    since = _last_event_id(admin)
    resp = _call(shared_server, "POST", f"/objects/{d['uid']}/chmod", admin.token,
                 json={"mode": spec})
    _error(resp, 400, "bad_mode", "access rights")
    assert admin.get_data(d["uid"])["access_rights"] == "750"
    assert not [e for e in admin.events(d["uid"], since=since) if e["kind"] == "chmod"]


@pytest.mark.parametrize("spec", ["", "7" * 65])
def test_chmod_spec_length_is_checked(shared_server: ServerProcess, admin: Client,
                                      spec: str) -> None:
    d = admin.post("/data", {"name": "chmod-target", "access_rights": "750"})
    resp = _call(shared_server, "POST", f"/objects/{d['uid']}/chmod", admin.token,
                 json={"mode": spec})
    _error(resp, 400, "invalid_body", "/mode")
    assert admin.get_data(d["uid"])["access_rights"] == "750"


@pytest.mark.parametrize("path,body", [
    ("/data", {"name": "x", "access_rights": "rw-r--r--"}),
    ("/data", {"name": "x", "access_rights": "7777"}),
    ("/apps", {"name": "x-app", "kind": "shared", "access_rights": "o+z"}),
])
def test_bad_access_rights_at_creation(shared_server: ServerProcess, admin: Client, path: str,
                                       body: dict[str, Any]) -> None:
    before = _state(admin)
    resp = _call(shared_server, "POST", path, admin.token, json=body)
    _error(resp, 400, "bad_mode", hidden=(body["access_rights"],))
    assert _state(admin) == before


@pytest.mark.parametrize("body,code,named", [
    ({"login": "bad login", "password": "long-enough-1", "rights": "standard"}, "bad_login",
     "'bad login'"),
    ({"login": "admin\n", "password": "long-enough-1", "rights": "standard"}, "bad_login",
     "'admin\\n'"),
    ({"login": "{u}", "password": "short", "rights": "standard"}, "weak_password", "8"),
    ({"login": "{u}", "password": "long-enough-1", "rights": "emperor"}, "bad_rights",
     "'emperor'"),
    ({"login": "{u}", "password": "long-enough-1", "rights": "standard", "group": "nope-grp"},
     "unknown_group", "'nope-grp'"),
    ({"login": "admin", "password": "long-enough-1", "rights": "standard"}, "exists",
     "'admin'"),
])
def test_bad_user_creation(shared_server: ServerProcess, admin: Client, body: dict[str, Any],
                           code: str, named: str) -> None:
    if body["login"] == "{u}":
        body = {**body, "login": _name("u")}
    before = _state(admin)
    resp = _call(shared_server, "POST", "/users", admin.token, json=body)
    status = {"unknown_group": 404, "exists": 409}.get(code, 400)
    if named.startswith("'"):  # a value sent: named by its field, never echoed
        _error(resp, status, code, hidden=(named.strip("'").replace("\\n", "\n"),))
    else:
        _error(resp, status, code, named)
    assert _state(admin) == before


def test_bad_app_creation(shared_server: ServerProcess, admin: Client, data_uid: str) -> None:
    before = _state(admin)
    cases = [
        ({"name": "bad name!", "kind": "shared"}, 400, "bad_name"),
        ({"name": _name("a") + "\n", "kind": "shared"}, 400, "bad_name"),
        ({"name": _name("a"), "binaries": {"linux/x86_64\n": data_uid}}, 400, "bad_platform"),
        ({"name": _name("a"), "kind": "native"}, 400, "no_binary"),
        ({"name": _name("a"), "kind": "shared", "binaries": {"linux/x86_64": data_uid}}, 400,
         "bad_kind"),
        ({"name": _name("a"), "binaries": {"linux": data_uid}}, 400, "bad_platform"),
        ({"name": _name("a"), "binaries": {"linux/x86_64": str(uuid.uuid4())}}, 404,
         "unknown_data"),
        ({"name": _name("a"), "kind": "docker"}, 400, "invalid_body"),
    ]
    for body, status, code in cases:
        _error(_call(shared_server, "POST", "/apps", admin.token, json=body), status, code)
    assert _state(admin) == before


def test_every_refused_request_is_an_event(shared_server: ServerProcess, admin: Client,
                                           app_name: str) -> None:
    login = _name("nosy")
    admin.create_user(login, "nosy-password", "standard")
    nosy = shared_server.client(login, "nosy-password")
    uid = admin.submit(app_name, access_rights="700")["uid"]
    since = _last_event_id(admin)
    with pytest.raises(ApiError) as e:
        nosy.get_work(uid)
    assert e.value.status == 403
    refused = [ev for ev in _events_since(admin, since) if ev["kind"] == "refused"]
    assert len(refused) == 1
    assert refused[0]["object"] == uid and refused[0]["actor"] == nosy.whoami()["uid"]
    assert "403 forbidden_access" in refused[0]["detail"]
