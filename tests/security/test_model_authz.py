"""Property-based authorization suite: random worlds, every route, every principal, each
decision compared with the independent model in ``tests/security/model.py``.

The server is the real Flask application (``create_app``) over a real migrated SQLite
database made by ``xwvm server init``, driven through its test client with real bearer
tokens. The *world* (users with levels and groups, apps, data, jobs with results, each
with a random owner, group and mode including the sticky bit) is written directly with the
models, because the API cannot set an arbitrary state (another user's object in a third
group, a job's result with rights of its own, an app named like another app's uid);
everything that is checked goes through the HTTP routes. Tokens are minted with
``auth.tokens.issue`` (as a login would) to spare a scrypt hash per user.

One world per Hypothesis example serves every principal and route of one property
family; a family's destructive calls (delete, disable, hold) are undone in the database
after each allowed one, so every principal meets the same world. Jobs of earlier examples
are aborted first so that workers only see this world's queue. Examples are derandomized
(CI sees the same worlds); a failure prints the world and each disagreeing decision.
Set ``XWVM_PROPERTY_EXAMPLES`` to run more examples.
"""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, update
from sqlalchemy.orm import Session, sessionmaker

from tests.security import model
from xwvm.server import init as server_init
from xwvm.server.app import create_app
from xwvm.server.auth import tokens
from xwvm.server.blobs import BlobStore
from xwvm.server.db.models import App, Data, User, UserGroup, Work
from xwvm.server.rights import Level

API = "/api/v1"
EXAMPLES = int(os.environ.get("XWVM_PROPERTY_EXAMPLES", "50"))
# Shrinking a failure to a minimal world takes minutes; CI reports the world as drawn.
PHASES = [Phase.explicit, Phase.generate, *([Phase.shrink] if os.environ.get(
    "XWVM_PROPERTY_SHRINK") else [])]
PROPS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                 phases=PHASES, print_blob=False,
                 suppress_health_check=[HealthCheck.function_scoped_fixture,
                                        HealthCheck.too_slow, HealthCheck.data_too_large])
BLOB = b"property-based payload\n"
LEVEL_INT = {model.STANDARD: Level.STANDARD, model.WORKER: Level.WORKER,
             model.VWORKER: Level.VWORKER, model.GROUP_ADMIN: Level.GROUP_ADMIN,
             model.SUPER: Level.SUPER}
N_GROUPS = 2


# --- the server ----------------------------------------------------------------------

class Server:
    """The app's test client and what the tests write the world with."""

    def __init__(self, client: FlaskClient, sessions: sessionmaker[Session], secret: bytes,
                 admin_uid: str, blob_sha: str, blobs: BlobStore) -> None:
        self.client, self.sessions, self.secret = client, sessions, secret
        self.admin_uid, self.blob_sha, self.blobs = admin_uid, blob_sha, blobs

    def __repr__(self) -> str:  # Hypothesis prints the arguments of a failing example
        return "Server()"

    def ensure_blob(self) -> None:
        if not self.blobs.exists(self.blob_sha):
            self.blobs.put_stream(io.BytesIO(BLOB), length=len(BLOB), max_size=len(BLOB))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    cfg = server_init.init(tmp_path_factory.mktemp("props") / "srv", "admin-password-1",
                           hostnames=["localhost"])
    app = create_app(cfg)
    ext = app.extensions["xwvm"]
    blobs = BlobStore(cfg.blob_dir)
    stored = blobs.put_stream(io.BytesIO(BLOB), length=len(BLOB), max_size=len(BLOB))
    with ext["sessions"]() as db:
        admin = db.query(User).filter_by(login="admin").one()
        admin_uid = admin.uid
    yield Server(app.test_client(), ext["sessions"], ext["secret"], admin_uid, stored.sha256,
                 blobs)
    ext["engine"].dispose()


# --- worlds --------------------------------------------------------------------------

MODES = st.one_of(st.sampled_from([0o700, 0o750, 0o755, 0o705, 0o770, 0o777, 0o711, 0o751,
                                   0o070, 0o007, 0o500, 0o000]),
                  st.integers(0, 0o777))
GROUP = st.one_of(st.none(), st.integers(0, N_GROUPS - 1))


@st.composite
def modes(draw: st.DrawFn) -> int:
    return draw(MODES) | (model.STICKY if draw(st.booleans()) else 0)


@dataclass
class UserSpec:
    level: str
    group: int | None
    owner: int  # index of the user that owns this user object; -1: the admin
    mode: int


@dataclass
class ObjSpec:
    kind: str  # app | data | work
    owner: int
    group: int | None
    mode: int
    app: int = 0  # a job's app
    completed: bool = False  # a job: COMPLETED with a result, else PENDING
    result_group: int | None = None
    result_mode: int = 0o755


@dataclass
class WorldSpec:
    users: list[UserSpec]
    objects: list[ObjSpec]
    requests: list[tuple[str, int | None, bool]]  # POST /users: level, group, public
    shadow: bool  # an app named like another app's uid

    def describe(self) -> str:
        lines = ["groups: g0, g1"]
        for i, u in enumerate(self.users):
            lines.append(f"  u{i}: {u.level}, group {_g(u.group)}, user object owned by "
                         f"{'admin' if u.owner < 0 else f'u{u.owner}'} mode {u.mode:04o}")
        for i, o in enumerate(self.objects):
            extra = ""
            if o.kind == "work":
                extra = f" app a{o.app}, " + (
                    f"COMPLETED, result group {_g(o.result_group)} mode {o.result_mode:04o}"
                    if o.completed else "PENDING")
            lines.append(f"  {o.kind}{i}: owner u{o.owner}, group {_g(o.group)}, "
                         f"mode {o.mode:04o}{extra}")
        if self.shadow:
            lines.append("  an app named like the first app's uid, owned by the last user")
        lines.append(f"  user requests: {self.requests}")
        return "\n".join(lines)


def _g(i: int | None) -> str:
    return "none" if i is None else f"g{i}"


LEVEL_WEIGHTS = st.sampled_from([model.STANDARD] * 3 + [model.GROUP_ADMIN] * 2
                                + [model.SUPER, model.WORKER, model.VWORKER])


@st.composite
def worlds(draw: st.DrawFn) -> WorldSpec:
    n = draw(st.integers(2, 5))
    users = [UserSpec(draw(LEVEL_WEIGHTS), draw(GROUP), draw(st.integers(-1, n - 1)),
                      draw(modes())) for _ in range(n)]
    owner = st.integers(0, n - 1)
    objects: list[ObjSpec] = []
    for _ in range(draw(st.integers(1, 3))):
        objects.append(ObjSpec("app", draw(owner), draw(GROUP), draw(modes())))
    n_apps = len(objects)
    for _ in range(draw(st.integers(1, 3))):
        objects.append(ObjSpec("data", draw(owner), draw(GROUP), draw(modes())))
    for _ in range(draw(st.integers(1, 4))):
        mode = draw(modes())  # results mostly have their job's rights, as uploads give them
        objects.append(ObjSpec("work", draw(owner), draw(GROUP), mode,
                               app=draw(st.integers(0, n_apps - 1)),
                               completed=draw(st.booleans()), result_group=draw(GROUP),
                               result_mode=mode if draw(st.booleans()) else draw(modes())))
    requests = draw(st.lists(st.tuples(st.sampled_from(model.LEVELS), GROUP, st.booleans()),
                             min_size=1, max_size=3))
    return WorldSpec(users, objects, requests, draw(st.booleans()))


@dataclass(repr=False)
class World:
    """A world written into the database: uids, the model's view of it, tokens."""

    spec: WorldSpec
    srv: Server
    tag: str
    groups: list[str] = field(default_factory=list)  # group uids
    principals: list[model.Principal] = field(default_factory=list)
    user_objs: list[model.Obj] = field(default_factory=list)
    objs: list[model.Obj] = field(default_factory=list)  # parallel to spec.objects
    results: dict[str, model.Obj] = field(default_factory=dict)  # job uid -> result data
    names: dict[str, str] = field(default_factory=dict)  # app uid -> name
    shadow_uid: str | None = None
    tokens: dict[str, str] = field(default_factory=dict)  # user uid -> bearer token
    rows: dict[str, Callable[[], list[Any]]] = field(default_factory=dict)  # uid -> rebuild
    disagreements: list[str] = field(default_factory=list)

    def group_uid(self, i: int | None) -> str | None:
        return None if i is None else self.groups[i]

    def of_kind(self, kind: str) -> list[model.Obj]:
        return [o for o, s in zip(self.objs, self.spec.objects, strict=True) if s.kind == kind]

    def label(self, uid: str) -> str:
        for i, p in enumerate(self.principals):
            if p.uid == uid:
                return f"u{i}"
        for i, o in enumerate(self.objs):
            if o.uid == uid:
                return f"{self.spec.objects[i].kind}{i}"
        for job, res in self.results.items():
            if res.uid == uid:
                return f"result of {self.label(job)}"
        if uid == self.shadow_uid:
            return "shadow app"
        return {g: f"g{i}" for i, g in enumerate(self.groups)}.get(uid, uid)

    # HTTP as one principal ----------------------------------------------------------

    def call(self, p: model.Principal, method: str, path: str, body: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {self.tokens[p.uid]}"}
        return self.srv.client.open(API + path, method=method, json=body, headers=headers)

    def expect(self, p: model.Principal, what: str, allowed: bool, resp: Any,
               refusals: tuple[int, ...] = ()) -> bool:
        """Compare the server's decision with the model's; 409 (in use, illegal move) means
        the request got past authorization unless it is among ``refusals`` (the codes by
        which this request is refused besides 403 and 404). Returns the server's
        decision."""
        code = resp.status_code
        got = (200 <= code < 300 or code == 409) and code not in refusals
        if code not in (200, 201, 204, 403, 404, 409, *refusals):
            self.disagreements.append(f"{what} by {self.who(p)}: unexpected {code} "
                                      f"{resp.get_data(as_text=True)[:200]}")
        elif got != allowed:
            self.disagreements.append(
                f"{what} by {self.who(p)}: model {'allows' if allowed else 'refuses'}, "
                f"server answered {code} {_error(resp)}")
        return got

    def who(self, p: model.Principal) -> str:
        group = "none" if p.group is None else self.label(p.group)
        return f"{self.label(p.uid)} ({p.level}, group {group})"

    def report(self) -> str:
        return ("model and server disagree in this world:\n" + self.spec.describe()
                + "\n" + "\n".join(f"- {d}" for d in self.disagreements[:40]))

    def restore(self, uid: str) -> None:
        """Write an object (and what went with it) back after an allowed delete."""
        with self.srv.sessions() as db:
            for row in self.rows[uid]():
                if isinstance(row, Work):  # keyed by seq: the held job's row goes first
                    db.execute(delete(Work).where(Work.uid == row.uid))
                db.merge(row)
            db.commit()


def _error(resp: Any) -> str:
    try:
        return str((resp.get_json() or {}).get("error", ""))
    except Exception:  # a body that is not JSON is reported as such
        return "(not JSON)"


_counter = iter(range(10**9))


def build(srv: Server, spec: WorldSpec) -> World:
    w = World(spec, srv, f"w{next(_counter)}x{uuid.uuid4().hex[:6]}")
    with srv.sessions() as db:
        # Jobs of earlier worlds leave the queue: workers must see this world's only.
        db.execute(update(Work).where(Work.status.in_(("PENDING", "WAITING", "RUNNING")))
                   .values(status="ABORTED"))
        for i in range(N_GROUPS):
            g = UserGroup(name=f"{w.tag}-g{i}", owner_uid=srv.admin_uid, access_rights=0o755)
            db.add(g)
            db.flush()
            w.groups.append(g.uid)
        uids = [str(uuid.uuid4()) for _ in spec.users]
        for i, u in enumerate(spec.users):
            owner = srv.admin_uid if u.owner < 0 else uids[u.owner]
            db.add(User(uid=uids[i], login=f"{w.tag}-u{i}", rights=int(LEVEL_INT[u.level]),
                        group_uid=w.group_uid(u.group), owner_uid=owner,
                        access_rights=u.mode, enabled=True))
            w.principals.append(model.Principal(uids[i], u.level, w.group_uid(u.group)))
            w.user_objs.append(model.Obj(uids[i], owner, w.group_uid(u.group), u.mode))
        db.flush()
        for i, o in enumerate(spec.objects):
            w.objs.append(_add_object(w, i, o))
        if spec.shadow:  # named like the first app's uid, owned by the last user
            first = w.of_kind("app")[0].uid
            shadow = _app_row(str(uuid.uuid4()), first, w.principals[-1].uid, None, 0o755)
            w.shadow_uid = shadow.uid
            w.names[shadow.uid] = first
            db.add(shadow)
        for p in w.principals:
            w.tokens[p.uid] = tokens.issue(db, srv.secret, p.uid, 3600)[0]
        for rebuild in w.rows.values():
            for row in rebuild():
                db.merge(row)
        db.commit()
    srv.ensure_blob()  # a delete of an earlier world may have removed it
    return w


def _app_row(uid: str, name: str, owner: str, group: str | None, mode: int) -> App:
    return App(uid=uid, name=name, kind="shared", owner_uid=owner, group_uid=group,
               access_rights=mode)


def _add_object(w: World, i: int, o: ObjSpec) -> model.Obj:
    uid = str(uuid.uuid4())
    owner, group = w.principals[o.owner].uid, w.group_uid(o.group)
    obj = model.Obj(uid, owner, group, o.mode)
    sha = w.srv.blob_sha
    if o.kind == "app":
        name = f"{w.tag}-a{i}"
        w.names[uid] = name
        w.rows[uid] = lambda: [_app_row(uid, name, owner, group, o.mode)]
    elif o.kind == "data":
        w.rows[uid] = lambda: [Data(uid=uid, name=f"d{i}", owner_uid=owner, group_uid=group,
                                    access_rights=o.mode, status="available",
                                    size=len(BLOB), sha256=sha)]
    else:
        app_uid = w.objs[o.app].uid
        result = str(uuid.uuid4()) if o.completed else None
        if result is not None:
            w.results[uid] = model.Obj(result, owner, w.group_uid(o.result_group),
                                       o.result_mode)

        def rows() -> list[Any]:
            job = Work(uid=uid, app_uid=app_uid, status="COMPLETED" if result else "PENDING",
                       owner_uid=owner, group_uid=group, access_rights=o.mode,
                       result_data_uid=result, exit_code=0 if result else None)
            if result is None:
                return [job]
            return [job, Data(uid=result, name="results.tar.gz", owner_uid=owner,
                              group_uid=w.group_uid(o.result_group),
                              access_rights=o.result_mode, status="available",
                              size=len(BLOB), sha256=sha)]
        w.rows[uid] = rows
    return obj


def _check(w: World) -> None:
    if w.disagreements:
        raise AssertionError(w.report())


# --- properties ----------------------------------------------------------------------

@PROPS
@given(spec=worlds())
def test_reads_and_listings_follow_the_model(server: Server, spec: WorldSpec) -> None:
    """GET of every app, data (metadata and bytes), job and result, and the listings of
    apps, data and users, by every principal; an id always names its own object."""
    w = build(server, spec)
    for p in w.principals:
        for o, s in zip(w.objs, spec.objects, strict=True):
            name = w.label(o.uid)
            path = {"app": "/apps/", "data": "/data/", "work": "/works/"}[s.kind] + o.uid
            resp = w.call(p, "GET", path)
            if w.expect(p, f"GET {s.kind} {name}", model.can_read(p, o), resp) and \
                    resp.status_code == 200 and resp.get_json().get("uid") != o.uid:
                w.disagreements.append(f"GET {name} by {w.who(p)} answered another "
                                       f"object: {w.label(resp.get_json().get('uid'))}")
            if s.kind == "data":
                w.expect(p, f"GET data {name} content", model.can_read(p, o),
                         w.call(p, "GET", path + "/content"))
            if o.uid in w.results:
                w.expect(p, f"GET data {w.label(w.results[o.uid].uid)}",
                         model.can_read(p, w.results[o.uid]),
                         w.call(p, "GET", "/data/" + w.results[o.uid].uid))
                w.expect(p, f"GET result of {name}",
                         model.can_read_result(p, o, w.results[o.uid]),
                         w.call(p, "GET", path + "/result"))
        _listing(w, p, "/apps", w.of_kind("app"))
        _listing(w, p, "/data", w.of_kind("data") + list(w.results.values()))
        _listing(w, p, "/users", w.user_objs, model.can_read_user)
    _check(w)


def _listing(w: World, p: model.Principal, path: str, objs: list[model.Obj],
             readable: Callable[[model.Principal, model.Obj], bool] = model.can_read) -> None:
    resp = w.call(p, "GET", path)
    if not model.is_user(p):
        w.expect(p, f"GET {path}", False, resp)
        return
    if not w.expect(p, f"GET {path}", True, resp) or resp.status_code != 200:
        return
    listed = {row["uid"] for row in resp.get_json()}
    for o in objs:
        if (o.uid in listed) != readable(p, o):
            w.disagreements.append(
                f"GET {path} by {w.who(p)}: {w.label(o.uid)} (mode {o.mode:04o}) "
                f"{'listed' if o.uid in listed else 'missing'}, model says "
                f"{'readable' if readable(p, o) else 'unreadable'}")


@PROPS
@given(spec=worlds())
def test_chmod_follows_the_model(server: Server, spec: WorldSpec) -> None:
    """chmod of every object (apps, data, jobs, results, users, groups) by every principal.
    Each sets the mode the object already has, so the world stays as it was."""
    w = build(server, spec)
    targets = [*w.objs, *w.results.values(), *w.user_objs,
               *(model.Obj(g, server.admin_uid, None, 0o755) for g in w.groups)]
    for p in w.principals:
        for o in targets:
            w.expect(p, f"chmod {o.mode:04o} {w.label(o.uid)}", model.can_chmod(p, o),
                     w.call(p, "POST", f"/objects/{o.uid}/chmod", {"mode": f"{o.mode:04o}"}))
    _check(w)


@PROPS
@given(spec=worlds())
def test_writes_and_deletes_follow_the_model(server: Server, spec: WorldSpec) -> None:
    """hold (a writer's action) of pending jobs, DELETE of every data, job and app, by
    every principal; what was allowed is written back before the next principal."""
    w = build(server, spec)
    for p in w.principals:
        for o, s in zip(w.objs, spec.objects, strict=True):
            if s.kind == "work" and not s.completed:
                resp = w.call(p, "POST", f"/works/{o.uid}/hold")
                if w.expect(p, f"hold {w.label(o.uid)}", model.can_write(p, o), resp):
                    w.restore(o.uid)
        # Data and jobs first: an app is refused (409) while jobs reference it.
        for kind in ("data", "work", "app"):
            for o in w.of_kind(kind):
                path = {"app": "/apps/", "data": "/data/", "work": "/works/"}[kind] + o.uid
                allowed = (model.can_delete_job(p, o, w.results.get(o.uid)) if kind == "work"
                           else model.can_delete(p, o))
                resp = w.call(p, "DELETE", path)
                if w.expect(p, f"DELETE {w.label(o.uid)} (mode {o.mode:04o})",
                            allowed, resp) and resp.status_code != 409:
                    w.restore(o.uid)
    _check(w)


@PROPS
@given(spec=worlds())
def test_submission_follows_the_model(server: Server, spec: WorldSpec) -> None:
    """POST /works with every app, named by its uid (which a shadowing app's name must not
    capture), by every principal."""
    w = build(server, spec)
    for p in w.principals:
        for o in w.of_kind("app"):
            resp = w.call(p, "POST", "/works", {"app": o.uid, "command": "true"})
            if w.expect(p, f"submit with {w.label(o.uid)} (mode {o.mode:04o})",
                        model.can_submit(p, o), resp) and resp.status_code == 201:
                got = resp.get_json().get("app")
                if got != o.uid:
                    w.disagreements.append(f"submit with {w.label(o.uid)} by {w.who(p)} "
                                           f"ran {w.label(got)} instead")
    _check(w)


@PROPS
@given(spec=worlds())
def test_user_management_follows_the_model(server: Server, spec: WorldSpec) -> None:
    """POST /users at every drawn (level, group, public) and disable/enable of every user,
    by every principal. A disabled user is enabled again, with a fresh token."""
    w = build(server, spec)
    for p in w.principals:
        for n, (level, group, public) in enumerate(spec.requests):
            body: dict[str, Any] = {"login": f"{w.tag}-{w.label(p.uid)}-n{n}",
                                    "password": "pw-" + uuid.uuid4().hex, "rights": level,
                                    "group": None if group is None else f"{w.tag}-g{group}"}
            if public:
                body["public"] = True
            w.expect(p, f"create {level} in {_g(group)}{' public' if public else ''}",
                     model.can_create_user(p, level, w.group_uid(group), public),
                     w.call(p, "POST", "/users", body),
                     refusals=(400,) if public and level not in ("worker", "vworker") else ())
        for t in w.principals:
            resp = w.call(p, "POST", f"/users/{t.uid}/disable")
            if w.expect(p, f"disable {w.who(t)}", model.can_disable(p, t), resp,
                        refusals=(409,) if t.uid == p.uid else ()):
                _reenable(w, t)
    _check(w)


@PROPS
@given(spec=worlds())
def test_chmod_of_a_job_carries_to_its_results(server: Server, spec: WorldSpec) -> None:
    """Issue 12 hole 10: "chmod on a job carries to" its results. Each completed job is
    chmodded by a principal the model allows to; its result then has the new mode if the
    model says it follows, else the one it had."""
    w = build(server, spec)
    for job, result in w.results.items():
        o = next(x for x in w.objs if x.uid == job)
        chmodder = next((p for p in w.principals if model.can_chmod(p, o)), None)
        if chmodder is None:
            continue
        mode = 0o750 if o.mode == 0o700 else 0o700
        want = mode if model.result_follows_chmod(chmodder, o, result) else result.mode
        resp = w.call(chmodder, "POST", f"/objects/{job}/chmod", {"mode": f"{mode:o}"})
        if not w.expect(chmodder, f"chmod {mode:o} {w.label(job)}", True, resp):
            continue
        with server.sessions() as db:
            got = db.get(Data, result.uid).access_rights
        if got != want:
            w.disagreements.append(f"chmod {mode:o} {w.label(job)} by {w.who(chmodder)} left "
                                   f"its result at {got:04o}, model says {want:04o}")
    _check(w)


def _reenable(w: World, t: model.Principal) -> None:
    with w.srv.sessions() as db:
        db.get(User, t.uid).enabled = True
        w.tokens[t.uid] = tokens.issue(db, w.srv.secret, t.uid, 3600)[0]
        db.commit()


@PROPS
@given(spec=worlds())
def test_created_workers_run_only_what_confinement_allows(server: Server,
                                                          spec: WorldSpec) -> None:
    """Worker accounts made with POST /users (rights=worker) by each principal allowed to,
    register a host sharing every app and pull until idle: each job given must be one the
    model lets that worker run, and no job it could run may be left pending."""
    w = build(server, spec)
    workers: list[tuple[model.Principal, model.Confinement, str]] = []
    for p in w.principals:
        for n, (_level, group, public) in enumerate(spec.requests):
            body: dict[str, Any] = {"login": f"{w.tag}-{w.label(p.uid)}-wk{n}",
                                    "password": "pw-" + uuid.uuid4().hex, "rights": "worker",
                                    "group": None if group is None else f"{w.tag}-g{group}"}
            if public:
                body["public"] = True
            resp = w.call(p, "POST", "/users", body)
            if resp.status_code == 201:
                conf = model.confinement_of_created(p, w.group_uid(group), public)
                workers.append((p, conf, resp.get_json()["uid"]))
    pending = {o.uid: o for o, s in zip(w.objs, spec.objects, strict=True)
               if s.kind == "work" and not s.completed}
    for creator, conf, uid in workers:
        _pull_all(w, creator, conf, uid, pending)
    for o in pending.values():
        for creator, conf, _uid in workers:
            if model.may_run(conf, o):
                w.disagreements.append(f"{w.label(o.uid)} left pending though a worker "
                                       f"made by {w.who(creator)} ({_conf(w, conf)}) "
                                       "may run it")
    _check(w)


def _conf(w: World, c: model.Confinement) -> str:
    return f"confined to {c.kind} {w.label(c.to)}" if c.to else "public"


def _pull_all(w: World, creator: model.Principal, conf: model.Confinement, uid: str,
              pending: dict[str, model.Obj]) -> None:
    with w.srv.sessions() as db:
        token = tokens.issue(db, w.srv.secret, uid, 3600)[0]
        db.commit()
    headers = {"Authorization": f"Bearer {token}"}
    apps = list(w.names.values())
    resp = w.srv.client.post(f"{API}/hosts", headers=headers, json={
        "name": f"h-{uid[:8]}", "os": "linux", "arch": "x86_64", "cpus": 4,
        "memory_mb": 8192, "disk_mb": 100000, "shared_apps": apps})
    assert resp.status_code == 201, resp.get_data(as_text=True)
    host = resp.get_json()["uid"]
    for _ in range(len(w.objs) + 1):
        resp = w.srv.client.post(f"{API}/hosts/{host}/work", headers=headers)
        assert resp.status_code == 200, resp.get_data(as_text=True)
        work = resp.get_json().get("work")
        if not work:
            return
        job = pending.pop(work["uid"], None)
        if job is None:
            w.disagreements.append(f"a worker made by {w.who(creator)} was given "
                                   f"{w.label(work['uid'])}, not a pending job of this world")
        elif not model.may_run(conf, job):
            w.disagreements.append(
                f"a worker made by {w.who(creator)} ({_conf(w, conf)}) was given "
                f"{w.label(job.uid)} "
                f"(owner {w.label(job.owner)}, group "
                f"{'none' if job.group is None else w.label(job.group)}, mode {job.mode:04o})")


def test_the_model_is_not_the_server() -> None:
    """The model must stay a second opinion: it imports nothing of xwvm."""
    source = Path(model.__file__).read_text()
    assert "import xwvm" not in source and "from xwvm" not in source
