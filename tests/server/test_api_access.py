"""Rights levels and access rights through the real HTTPS API: who may read, write and execute
what, who may create whom, chmod and the sticky bit, and the narrow powers of worker accounts."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.processes import ServerProcess
from xwvm.client.sdk import ApiError, Client

PASSWORD = "access-password-1"
ACTORS = ("owner", "member", "other", "gadmin", "super")


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _call(server: ServerProcess, client: Client, method: str, path: str,
          **kw: Any) -> requests.Response:
    return requests.request(method, f"{server.url}/api/v1{path}", verify=str(server.ca),
                            headers={"Authorization": f"Bearer {client.token}"}, timeout=30,
                            **kw)


def _refused(resp: requests.Response, status: int, code: str, *words: str) -> None:
    assert resp.status_code == status, (resp.status_code, resp.text)
    body = resp.json()
    assert body["error"] == code, body
    for word in words:
        assert word in body["message"], (word, body)


@dataclass
class World:
    server: ServerProcess
    admin: Client
    group: str
    other_group: str
    users: dict[str, dict[str, Any]]
    clients: dict[str, Client]
    job_app: str  # a public shared app that no worker provides: its jobs stay PENDING

    def login(self, login: str, password: str = PASSWORD) -> Client:
        return self.server.client(login, password)

    def upload(self, who: str, content: bytes, mode: str = "755",
               name: str = "f.bin") -> dict[str, Any]:
        c = self.clients[who]
        d = c.post("/data", {"name": name, "size": len(content),
                             "sha256": hashlib.sha256(content).hexdigest(),
                             "access_rights": mode})
        resp = _call(self.server, c, "PUT", f"/data/{d['uid']}/content", data=content)
        assert resp.status_code == 200, resp.text
        return resp.json()


@pytest.fixture(scope="module")
def world(shared_server: ServerProcess) -> World:
    admin = shared_server.client()
    group, other_group = _name("grp"), _name("grp")
    admin.create_group(group)
    admin.create_group(other_group)
    specs = {"owner": ("standard", group), "member": ("standard", group),
             "other": ("standard", other_group), "gadmin": ("group_admin", group),
             "app_owner": ("group_admin", group)}
    users, clients = {}, {"super": admin}
    for role, (rights, grp) in specs.items():
        login = _name(role)
        users[role] = admin.create_user(login, PASSWORD, rights, grp)
        clients[role] = shared_server.client(login, PASSWORD)
    users["super"] = admin.whoami()
    job_app = _name("jobs")
    admin.create_app(job_app, kind="shared")
    return World(shared_server, admin, group, other_group, users, clients, job_app)


# --- the matrix: actor x mode x operation ------------------------------------------------

# Who may read (and execute, for apps: the same bits) and write an object of each mode.
# The owner is a standard user of the group (a group admin for apps, which need that level);
# "member" is a standard user of the same group, "other" a standard user of another group,
# "gadmin" an admin of the owner's group, "super" the super user.
READERS = {"700": {"owner", "gadmin", "super"},
           "750": {"owner", "member", "gadmin", "super"},
           "755": {"owner", "member", "other", "gadmin", "super"}}
WRITERS = {"700": {"owner", "gadmin", "super"},
           "750": {"owner", "gadmin", "super"},
           "755": {"owner", "gadmin", "super"}}
OPERATIONS = {"read_job": READERS, "read_data": READERS, "read_content": READERS,
              "abort_job": WRITERS, "delete_data": WRITERS, "submit": READERS}
MATRIX = [(op, mode, actor, actor in allowed[mode])
          for op, allowed in OPERATIONS.items() for mode in ("700", "750", "755")
          for actor in ACTORS]


@pytest.mark.parametrize("op,mode,actor,allowed", MATRIX,
                         ids=[f"{o}-{m}-{a}-{'allow' if ok else 'deny'}"
                              for o, m, a, ok in MATRIX])
def test_access_matrix(world: World, op: str, mode: str, actor: str, allowed: bool) -> None:
    if op.endswith("_job"):
        _check_job_access(world, op, mode, actor, allowed)
    elif op in ("read_data", "read_content", "delete_data"):
        _check_data_access(world, op, mode, actor, allowed)
    else:  # submit: needs exec on the app
        _check_submit_access(world, mode, actor, allowed)


def _check_job_access(world: World, op: str, mode: str, actor: str, allowed: bool) -> None:
    server, admin, who = world.server, world.admin, world.clients[actor]
    job = world.clients["owner"].submit(world.job_app, access_rights=mode)
    assert job["access_rights"] == mode
    if op == "read_job":
        resp = _call(server, who, "GET", f"/works/{job['uid']}")
        expected = (200, job["uid"])
    else:
        resp = _call(server, who, "POST", f"/works/{job['uid']}/abort")
        expected = (200, job["uid"])
    status_after = admin.get_work(job["uid"])["status"]
    if allowed:
        assert (resp.status_code, resp.json()["uid"]) == expected, resp.text
        assert status_after == ("ABORTED" if op == "abort_job" else "PENDING")
    else:
        word = "read" if op == "read_job" else "write"
        _refused(resp, 403, "forbidden_access", f"no {word} access", job["uid"])
        assert status_after == "PENDING"


def _check_data_access(world: World, op: str, mode: str, actor: str, allowed: bool) -> None:
    server, admin, who = world.server, world.admin, world.clients[actor]
    content = uuid.uuid4().bytes * 4
    data = world.upload("owner", content, mode)
    path = f"/data/{data['uid']}" + ("/content" if op == "read_content" else "")
    resp = _call(server, who, "DELETE" if op == "delete_data" else "GET", path)
    if not allowed:
        word = "write" if op == "delete_data" else "read"
        _refused(resp, 403, "forbidden_access", f"no {word} access", data["uid"])
        assert admin.get_data(data["uid"]) == data
    elif op == "read_content":
        assert (resp.status_code, resp.content) == (200, content)
    elif op == "read_data":
        assert (resp.status_code, resp.json()) == (200, data)
    else:
        assert resp.status_code == 200, resp.text
        with pytest.raises(ApiError) as e:
            admin.get_data(data["uid"])
        assert e.value.code == "unknown_data"


def _check_submit_access(world: World, mode: str, actor: str, allowed: bool) -> None:
    server, admin, who = world.server, world.admin, world.clients[actor]
    app = world.clients["app_owner"].create_app(_name("app"), kind="shared",
                                                access_rights=mode)
    if actor == "owner":
        who = world.clients["app_owner"]
    before = len(admin.list_works())
    # By id: what a name means to whom is tests/security/test_names.py's subject.
    resp = _call(server, who, "POST", "/works", json={"app": app["uid"]})
    if allowed:
        assert resp.status_code == 201, resp.text
        assert resp.json()["app"] == app["uid"]
        assert len(admin.list_works()) == before + 1
    else:
        _refused(resp, 403, "forbidden_access", "no execute access", app["uid"])
        assert len(admin.list_works()) == before


def test_lists_show_only_readable_objects(world: World) -> None:
    owner = world.clients["owner"]
    private = world.upload("owner", b"private", "700")
    group = world.upload("owner", b"group", "750")
    public = world.upload("owner", b"public", "755")
    seen = {role: {d["uid"] for d in world.clients[role].list_data()} for role in ACTORS}
    assert {private["uid"], group["uid"], public["uid"]} <= seen["owner"]
    assert {group["uid"], public["uid"]} <= seen["member"] and private["uid"] not in seen["member"]
    assert public["uid"] in seen["other"]
    assert not {private["uid"], group["uid"]} & seen["other"]
    assert {private["uid"], group["uid"], public["uid"]} <= seen["super"]
    job = owner.submit(world.job_app, access_rights="700")
    assert job["uid"] not in {w["uid"] for w in world.clients["other"].list_works([job["uid"]])}
    assert job["uid"] in {w["uid"] for w in owner.list_works()}


# --- rights levels -----------------------------------------------------------------------


def test_standard_user_cannot_create_apps_users_or_groups(world: World) -> None:
    c = world.clients["owner"]
    apps, users, groups = (world.admin.list_apps(), world.admin.list_users(),
                           world.admin.list_groups())
    resp = _call(world.server, c, "POST", "/apps", json={"name": _name("a"), "kind": "shared"})
    _refused(resp, 403, "forbidden_level", "insert app", "group_admin", "standard")
    resp = _call(world.server, c, "POST", "/users",
                 json={"login": _name("u"), "password": PASSWORD, "rights": "standard",
                       "group": world.group})
    _refused(resp, 403, "forbidden_level", "insert user", "group_admin")
    resp = _call(world.server, c, "POST", "/groups", json={"name": _name("g")})
    _refused(resp, 403, "forbidden_level", "insert group", "super")
    assert (world.admin.list_apps(), world.admin.list_users(),
            world.admin.list_groups()) == (apps, users, groups)


def test_group_admin_creates_only_standard_users_of_their_group(world: World) -> None:
    ga = world.clients["gadmin"]
    login = _name("new")
    user = ga.create_user(login, PASSWORD, "standard", world.group)
    assert user["rights"] == "standard"
    assert user["group"] == world.users["gadmin"]["group"]
    assert world.login(login).whoami()["login"] == login
    users = world.admin.list_users()
    refused = [("super", world.group), ("group_admin", world.group),
               ("standard", world.other_group), ("standard", None), ("super", None)]
    for rights, group in refused:
        resp = _call(world.server, ga, "POST", "/users",
                     json={"login": _name("no"), "password": PASSWORD, "rights": rights,
                           "group": group})
        _refused(resp, 403, "forbidden_level", "may not create")
    resp = _call(world.server, ga, "POST", "/groups", json={"name": _name("g")})
    _refused(resp, 403, "forbidden_level", "super")
    assert world.admin.list_users() == users


def test_super_user_creates_any_level(world: World) -> None:
    for rights in ("standard", "group_admin", "super"):
        login = _name(rights.replace("_", ""))
        assert world.admin.create_user(login, PASSWORD, rights, None)["rights"] == rights
        assert world.login(login).whoami()["rights"] == rights


# --- chmod and the sticky bit ------------------------------------------------------------


def test_chmod_by_a_non_owner_is_refused(world: World) -> None:
    data = world.upload("owner", b"mine", "755")
    job = world.clients["owner"].submit(world.job_app)
    for actor in ("member", "other"):
        for uid in (data["uid"], job["uid"]):
            resp = _call(world.server, world.clients[actor], "POST", f"/objects/{uid}/chmod",
                         json={"mode": "777"})
            _refused(resp, 403, "forbidden_access", "only the owner", uid)
    assert world.admin.get_data(data["uid"])["access_rights"] == "755"
    assert world.admin.get_work(job["uid"])["access_rights"] == "755"
    # The admin of the owner's group, and the super user, may.
    assert world.clients["gadmin"].chmod(data["uid"], "750")["access_rights"] == "750"
    assert world.admin.chmod(data["uid"], "700")["access_rights"] == "700"


def test_owner_chmod_changes_what_others_may_do(world: World) -> None:
    owner, member, other = (world.clients[r] for r in ("owner", "member", "other"))
    data = world.upload("owner", b"secret", "700")

    def can_read(c: Client) -> bool:
        resp = _call(world.server, c, "GET", f"/data/{data['uid']}/content")
        assert resp.status_code in (200, 403), resp.text
        return resp.status_code == 200

    assert (can_read(member), can_read(other)) == (False, False)
    steps = [("755", "755", True, True), ("o-rwx", "750", True, False),
             ("g-r", "710", False, False), ("0744", "744", True, True),
             ("go=", "700", False, False), ("g+rx,o+r", "754", True, True),
             ("a-r,u+r", "710", False, False), ("u-r", "310", False, False)]
    for spec, shown, member_reads, other_reads in steps:
        assert owner.chmod(data["uid"], spec) == {"uid": data["uid"], "kind": "data",
                                                  "access_rights": shown}
        assert world.admin.get_data(data["uid"])["access_rights"] == shown
        assert (can_read(member), can_read(other)) == (member_reads, other_reads), spec
    # Without its own read bit even the owner is refused; the owner may still chmod it back.
    assert not can_read(owner)
    owner.chmod(data["uid"], "u+r")
    assert can_read(owner)
    kinds = [e["detail"] for e in owner.events(data["uid"]) if e["kind"] == "chmod"]
    assert kinds[0] == "700 -> 755" and kinds[-1] == "310 -> 710"


def test_chmod_of_a_job_changes_who_may_see_it(world: World) -> None:
    owner, other = world.clients["owner"], world.clients["other"]
    job = owner.submit(world.job_app, access_rights="700")
    path = f"/works/{job['uid']}"
    assert _call(world.server, other, "GET", path).status_code == 403
    owner.chmod(job["uid"], "o+r")
    assert _call(world.server, other, "GET", path).json()["access_rights"] == "704"
    # Reading is not writing.
    _refused(_call(world.server, other, "POST", f"{path}/abort"), 403, "forbidden_access")


def test_sticky_data_is_deleted_only_by_its_owner(world: World) -> None:
    owner, member = world.clients["owner"], world.clients["member"]
    plain = world.upload("owner", b"group-writable", "770")
    sticky = world.upload("owner", b"sticky", "770")
    assert owner.chmod(sticky["uid"], "+t")["access_rights"] == "1770"
    # Group write access lets a member delete the plain one ...
    assert _call(world.server, member, "DELETE", f"/data/{plain['uid']}").status_code == 200
    # ... but not the sticky one.
    resp = _call(world.server, member, "DELETE", f"/data/{sticky['uid']}")
    _refused(resp, 403, "forbidden_sticky", "sticky", sticky["uid"])
    assert world.admin.get_data(sticky["uid"])["access_rights"] == "1770"
    content = _call(world.server, member, "GET", f"/data/{sticky['uid']}/content")
    assert content.content == b"sticky"
    # Nor can the member clear the bit (only the owner may chmod).
    resp = _call(world.server, member, "POST", f"/objects/{sticky['uid']}/chmod",
                 json={"mode": "-t"})
    _refused(resp, 403, "forbidden_access")
    owner.delete_data(sticky["uid"])
    with pytest.raises(ApiError) as e:
        world.admin.get_data(sticky["uid"])
    assert e.value.code == "unknown_data"


# --- worker accounts ---------------------------------------------------------------------


def _host(worker: Client, arch: str = "x86_64", shared: list[str] | None = None
          ) -> dict[str, Any]:
    return worker.register_host({"name": _name("host"), "os": "linux", "arch": arch,
                                 "cpus": 2, "memory_mb": 2048, "disk_mb": 4096,
                                 "shared_apps": shared or []})


def _public_worker(world: World) -> Client:
    cred = world.admin.enroll_worker(public=True)
    return world.login(cred["login"], cred["password"])


ARCH_A, ARCH_B = "ppc64le", "armv7l"  # one per test below; no other test's host has them


@dataclass
class NativeJob:
    arch: str
    binary: dict[str, Any]
    input: dict[str, Any]
    input_content: bytes
    job: dict[str, Any]


def _native_job(world: World, arch: str) -> NativeJob:
    """A public job of a native app whose only binary is for a platform no other test's
    host has (so that only this test's hosts, of that arch, can take it; the server
    accepts only the platforms workers report)."""
    binary = world.upload("super", b"#!/bin/sh\necho " + arch.encode(), "700", "bin")
    app = world.admin.create_app(_name("native"), {f"linux/{arch}": binary["uid"]})
    content = b"input of " + arch.encode()
    inp = world.upload("owner", content, "700", "in.txt")
    job = world.clients["owner"].submit(app["name"], inputs=[{"data": inp["uid"],
                                                              "name": "in.txt"}])
    # The owner's job reads private data: it is public only so a public worker may run it.
    assert job["status"] == "PENDING" and job["access_rights"] == "755"
    return NativeJob(arch, binary, inp, content, job)


def test_worker_account_has_narrow_powers(world: World) -> None:
    worker = _public_worker(world)
    host = _host(worker)
    assert host["worker"] == worker.whoami()["uid"]
    data = world.upload("owner", b"public data", "755")
    checks = [("GET", "/works", None), ("GET", "/data", None), ("GET", "/apps", None),
              ("GET", "/users", None), ("GET", "/groups", None), ("GET", "/hosts", None),
              ("GET", f"/events?object={data['uid']}", None),
              ("POST", "/works", {"app": world.job_app}),
              ("POST", "/data", {"name": "x"}),
              ("POST", "/apps", {"name": _name("a"), "kind": "shared"}),
              ("POST", "/workers/enroll", {}),
              ("POST", f"/objects/{data['uid']}/chmod", {"mode": "777"})]
    works = len(world.admin.list_works())
    for method, path, body in checks:
        resp = _call(world.server, worker, method, path, json=body)
        _refused(resp, 403, "forbidden_level", "worker account")
    assert len(world.admin.list_works()) == works
    assert world.admin.get_data(data["uid"])["access_rights"] == "755"
    # Public data is no business of a worker unless one of its jobs needs it.
    for suffix in ("", "/content"):
        resp = _call(world.server, worker, "GET", f"/data/{data['uid']}{suffix}")
        _refused(resp, 403, "forbidden_not_assigned", data["uid"])


def test_only_workers_register_hosts(world: World) -> None:
    facts = {"name": _name("h"), "os": "linux", "arch": "x86_64", "cpus": 1,
             "memory_mb": 1, "disk_mb": 1}
    for role in ("owner", "gadmin"):
        resp = _call(world.server, world.clients[role], "POST", "/hosts", json=facts)
        _refused(resp, 403, "forbidden_level", "needs a worker account")


def test_worker_reads_only_the_data_of_its_jobs(world: World) -> None:
    nj = _native_job(world, ARCH_A)
    worker = _public_worker(world)
    host = _host(worker, nj.arch)
    bin_path = f"/data/{nj.binary['uid']}/content"
    # Before the job is assigned, the binary is not the worker's to read.
    _refused(_call(world.server, worker, "GET", bin_path), 403, "forbidden_not_assigned")
    got = worker.request_work(host["uid"])["work"]
    assert got["uid"] == nj.job["uid"]
    assert {(f["role"], f["data"]) for f in got["files"]} == {
        ("app", nj.binary["uid"]), ("input", nj.input["uid"])}
    resp = _call(world.server, worker, "GET", bin_path)
    assert resp.status_code == 200 and resp.content.startswith(b"#!/bin/sh")
    resp = _call(world.server, worker, "GET", f"/data/{nj.input['uid']}/content")
    assert resp.status_code == 200 and resp.content == nj.input_content
    assert worker.get_work(nj.job["uid"])["status"] == "RUNNING"
    # Other data, and other jobs, stay out of reach.
    unrelated = world.upload("owner", b"unrelated", "755")
    _refused(_call(world.server, worker, "GET", f"/data/{unrelated['uid']}/content"), 403,
             "forbidden_not_assigned")
    other_job = world.clients["owner"].submit(world.job_app)
    _refused(_call(world.server, worker, "GET", f"/works/{other_job['uid']}"), 403,
             "forbidden_not_assigned")
    # Once the job is over, its data is out of reach again.
    world.clients["owner"].work_action(nj.job["uid"], "abort")
    _refused(_call(world.server, worker, "GET", bin_path), 403, "forbidden_not_assigned")


def test_worker_cannot_touch_another_workers_job_or_host(world: World,
                                                         tmp_path: Path) -> None:
    nj = _native_job(world, ARCH_B)
    first, second = _public_worker(world), _public_worker(world)
    host1, host2 = _host(first, nj.arch), _host(second, nj.arch)
    assert first.request_work(host1["uid"])["work"]["uid"] == nj.job["uid"]
    uid = nj.job["uid"]
    result = tmp_path / "r.tar.gz"
    result.write_bytes(b"stolen")
    data_before = len(world.admin.list_data())
    attempts = [("POST", f"/works/{uid}/report", {"json": {"status": "COMPLETED"}}),
                ("POST", f"/works/{uid}/report", {"json": {"status": "ERROR"}}),
                ("PUT", f"/works/{uid}/result", {"data": b"stolen"}),
                ("GET", f"/works/{uid}", {}),
                ("GET", f"/data/{nj.binary['uid']}/content", {})]
    for method, path, kw in attempts:
        resp = _call(world.server, second, method, path, **kw)
        _refused(resp, 403, "forbidden_not_assigned")
    for method, path, body in [("POST", f"/hosts/{host1['uid']}/heartbeat", {"running": [uid]}),
                               ("POST", f"/hosts/{host1['uid']}/work", None),
                               ("POST", "/hosts", {"uid": host1["uid"], "name": "steal",
                                                   "os": "linux", "arch": nj.arch, "cpus": 1,
                                                   "memory_mb": 1, "disk_mb": 1})]:
        resp = _call(world.server, second, method, path, json=body)
        _refused(resp, 403, "not_your_host", host1["uid"])
    assert len(world.admin.list_data()) == data_before
    job = world.admin.get_work(uid)
    assert (job["status"], job["host"], job["result"]) == ("RUNNING", host1["uid"], None)
    # The second worker's own host gets nothing (the only matching job is taken) ...
    assert "work" not in second.request_work(host2["uid"])
    # ... while the first worker finishes its job normally.
    first.upload_result(uid, result)
    assert first.report(uid, "COMPLETED", 0)["status"] == "COMPLETED"


def test_user_confined_worker_runs_only_its_users_jobs(world: World) -> None:
    owner, other = world.clients["owner"], world.clients["other"]
    app = _name("confined")
    world.admin.create_app(app, kind="shared")
    theirs = other.submit(app)  # public (755): any public worker could run it
    assert theirs["access_rights"] == "755"
    cred = owner.enroll_worker()
    assert cred["user"]["confined_to_user"] == world.users["owner"]["uid"]
    worker = world.login(cred["login"], cred["password"])
    host = _host(worker, shared=[app])
    assert "work" not in worker.request_work(host["uid"])
    assert world.admin.get_work(theirs["uid"])["status"] == "PENDING"
    mine = owner.submit(app, access_rights="700")
    assert worker.request_work(host["uid"])["work"]["uid"] == mine["uid"]
    assert "work" not in worker.request_work(host["uid"])
    assert world.admin.get_work(theirs["uid"])["status"] == "PENDING"
    # A public worker does take the other user's public job.
    public = _public_worker(world)
    assert public.request_work(_host(public, shared=[app])["uid"])["work"]["uid"] == \
        theirs["uid"]


def test_standard_user_cannot_enroll_public_or_project_workers(world: World) -> None:
    c = world.clients["owner"]
    users = world.admin.list_users()
    _refused(_call(world.server, c, "POST", "/workers/enroll", json={"public": True}), 403,
             "forbidden_level", "super user")
    _refused(_call(world.server, c, "POST", "/workers/enroll", json={"project": world.group}),
             403, "forbidden_level", "usergroup")
    _refused(_call(world.server, world.clients["gadmin"], "POST", "/workers/enroll",
                   json={"project": world.other_group}), 403, "forbidden_level")
    assert world.admin.list_users() == users


def test_hosts_have_access_rights_like_every_object(world: World) -> None:
    """A host is owned by the user who enrolled its worker account, in that user's group,
    public (755) at first; its owner's chmod decides who sees it in `xwvm workers`."""
    cred = world.clients["owner"].enroll_worker()
    worker = world.login(cred["login"], cred["password"])
    host = _host(worker)
    assert (host["owner"], host["group"], host["access_rights"]) == \
        (world.users["owner"]["uid"], world.users["owner"]["group"], "755")

    def seen_by(role: str) -> bool:
        return host["uid"] in {h["uid"] for h in world.clients[role].list_hosts()}

    assert all(seen_by(r) for r in ACTORS)
    for role in ("other", "member"):
        resp = _call(world.server, world.clients[role], "POST",
                     f"/objects/{host['uid']}/chmod", json={"mode": "700"})
        _refused(resp, 403, "forbidden_access", "only the owner")
    resp = _call(world.server, worker, "POST", f"/objects/{host['uid']}/chmod",
                 json={"mode": "777"})
    _refused(resp, 403, "forbidden_level", "worker account")
    assert world.clients["owner"].chmod(host["uid"], "750")["kind"] == "host"
    assert {r: seen_by(r) for r in ACTORS} == {
        "owner": True, "member": True, "other": False, "gadmin": True, "super": True}
    world.clients["owner"].chmod(host["uid"], "go-rx")
    assert {r: seen_by(r) for r in ACTORS} == {
        "owner": True, "member": False, "other": False, "gadmin": True, "super": True}
    # The host keeps working for its worker: access rights are about who sees it.
    assert worker.heartbeat(host["uid"], [])["alive_period"] > 0
    events = [e["kind"] for e in world.admin.events(host["uid"])]
    assert events.count("chmod") == 2
