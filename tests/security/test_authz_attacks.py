"""Authorization attacks against a real server over TLS, as the audit of issue 12 made them:
a group admin's unconfined worker (hole 1), absent groups that compare equal (hole 2), and
results read through their job past their own data's rights (hole 3)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import ServerProcess, run_cli
from xwvm.client.sdk import ApiError, Client

PW = "attack-password-1"


@dataclass
class Grid:
    server: ServerProcess
    admin: Client
    tag: str

    def name(self, base: str) -> str:
        return f"{base}-{self.tag}-{uuid.uuid4().hex[:4]}"

    def user(self, rights: str = "standard", group: str | None = None) -> tuple[Client, dict]:
        login = self.name(rights.replace("_", ""))
        row = self.admin.create_user(login, PW, rights, group)
        return self.server.client(login, PW), row

    def shared_app(self) -> str:
        """An app no binary provides: only hosts that share it (ours) run its jobs."""
        name = self.name("app")
        self.admin.create_app(name, kind="shared")
        return name

    def host(self, worker: Client, app: str) -> str:
        return worker.register_host({"name": self.name("host"), "os": "linux",
                                     "arch": "x86_64", "cpus": 2, "memory_mb": 2048,
                                     "disk_mb": 4096, "shared_apps": [app]})["uid"]


@pytest.fixture(scope="module")
def grid(shared_server: ServerProcess) -> Grid:
    return Grid(shared_server, shared_server.client(), uuid.uuid4().hex[:6])


def refused(call: Callable[[], Any], status: int = 403) -> ApiError:
    with pytest.raises(ApiError) as err:
        call()
    assert err.value.status == status, err.value
    return err.value


def upload(c: Client, content: bytes, mode: str, tmp: Path) -> dict:
    path = tmp / f"in-{uuid.uuid4().hex[:6]}.txt"
    path.write_bytes(content)
    return c.upload_data(path, access_rights=mode)


def offered(worker: Client, host: str, rounds: int = 10) -> list[str]:
    """Every job the server offers this host, each given back at once."""
    seen = []
    for _ in range(rounds):
        answer = worker.request_work(host)
        if "work" not in answer:
            break
        seen.append(answer["work"]["uid"])
        worker.report(answer["work"]["uid"], "PENDING")
    return seen


# --- hole 1: workers a group admin creates ----------------------------------------------

def test_group_admins_worker_is_confined_to_the_group(grid: Grid, tmp_path: Path) -> None:
    """The audit's attack: a cms admin creates a worker account; it was unconfined, so it
    ran an atlas user's public job and read that user's private input."""
    cms, atlas = grid.name("cms"), grid.name("atlas")
    cms_uid = grid.admin.create_group(cms)["uid"]
    grid.admin.create_group(atlas)
    gadmin, _ = grid.user("group_admin", cms)
    member, _ = grid.user("standard", cms)
    victim, _ = grid.user("standard", atlas)
    app = grid.shared_app()
    secret = upload(victim, b"atlas private input", "700", tmp_path)
    theirs = victim.submit(app, access_rights="755",
                           inputs=[{"data": secret["uid"], "name": "in.txt"}])
    ours = member.submit(app, access_rights="750")

    login = grid.name("w")
    account = gadmin.post("/users", {"login": login, "password": PW, "rights": "worker",
                                     "group": cms})
    assert (account["confined_to_group"], account["confined_to_user"]) == (cms_uid, None)
    worker = grid.server.client(login, PW)
    host = grid.host(worker, app)
    seen = offered(worker, host)
    assert theirs["uid"] not in seen and ours["uid"] in seen, seen
    refused(lambda: worker.get(f"/data/{secret['uid']}"))
    refused(lambda: worker.request("GET", f"/data/{secret['uid']}/content"))


def test_worker_confinement_however_created(grid: Grid) -> None:
    """No worker account is public unless a super user says so: a super user's worker
    without a group runs its creator's jobs; only a super user may make one public."""
    cms = grid.name("cms")
    grid.admin.create_group(cms)
    gadmin, _ = grid.user("group_admin", cms)
    me = grid.admin.whoami()["uid"]
    row = grid.admin.create_user(grid.name("w"), PW, "vworker")
    assert (row["confined_to_user"], row["confined_to_group"]) == (me, None)
    public = grid.admin.post("/users", {"login": grid.name("w"), "password": PW,
                                        "rights": "worker", "public": True})
    assert (public["confined_to_user"], public["confined_to_group"]) == (None, None)
    refused(lambda: gadmin.post("/users", {"login": grid.name("w"), "password": PW,
                                           "rights": "worker", "group": cms,
                                           "public": True}))
    # "public" means nothing for accounts that run no jobs: refused, not ignored.
    refused(lambda: grid.admin.post("/users", {"login": grid.name("u"), "password": PW,
                                               "rights": "standard", "public": True}), 400)


def test_public_workers_through_the_cli(grid: Grid, tmp_path: Path) -> None:
    """``xwvm user add --rights worker`` confines; ``--public`` is a super user's word."""
    cms = grid.name("cms")
    grid.admin.create_group(cms)
    pw = tmp_path / "pw"
    pw.write_text(PW)
    gadmin_login = grid.name("ga")
    grid.admin.create_user(gadmin_login, PW, "group_admin", cms)
    homes = {}
    for login, password_file in (("admin", grid.server.password_file), (gadmin_login, pw)):
        homes[login] = tmp_path / login
        run_cli(["login", "--server", grid.server.url, "--ca", str(grid.server.ca),
                 "--user", login, "--password-file", str(password_file)], homes[login])
    for login, public in (("admin", True), ("admin", False), (gadmin_login, False)):
        worker = grid.name("w")
        run_cli(["user", "add", worker, "--rights", "worker", "--password-file", str(pw),
                 *(["--group", cms] if login != "admin" else []),
                 *(["--public"] if public else [])], homes[login])
        row = grid.admin.user_by_login(worker)
        confined = (row["confined_to_user"], row["confined_to_group"])
        if public:
            assert confined == (None, None)
        elif login == "admin":
            assert confined == (grid.admin.whoami()["uid"], None)
        else:  # the group admin's: confined to cms
            assert confined[0] is None and confined[1] is not None
    refusal = run_cli(["user", "add", grid.name("w"), "--rights", "worker", "--group", cms,
                       "--public", "--password-file", str(pw)], homes[gadmin_login],
                      check=False)
    assert refusal.returncode != 0 and "super" in (refusal.stderr + refusal.stdout)


# --- hole 2: a group admin with no group ------------------------------------------------

def test_groupless_group_admin_gains_nothing_from_absent_groups(grid: Grid,
                                                                tmp_path: Path) -> None:
    """``None == None`` made a group admin without a group the admin of every object and
    user without one: the super user's included."""
    lone, _ = grid.user("group_admin")
    bob, bob_row = grid.user("standard")
    app = grid.shared_app()
    admin_app = grid.admin.get_app(app)
    admin_data = upload(grid.admin, b"admin's", "700", tmp_path)
    admin_job = grid.admin.submit(app, hold=True, access_rights="700")
    admin_user = grid.admin.user_by_login("admin")
    bob_data = upload(bob, b"bob's", "700", tmp_path)
    bob_job = bob.submit(app, hold=True, access_rights="700")
    targets = [admin_app, admin_data, admin_job, admin_user, bob_data, bob_job, bob_row]
    for obj in targets:
        assert obj["group"] is None, obj
        refused(lambda obj=obj: lone.chmod(obj["uid"], "777"))
    assert grid.admin.get_data(admin_data["uid"])["access_rights"] == "700"
    assert bob.get_work(bob_job["uid"])["access_rights"] == "700"
    refused(lambda: lone.set_user_enabled(bob_row["uid"], False))
    refused(lambda: lone.set_user_enabled(admin_user["uid"], False))
    refused(lambda: lone.create_user(grid.name("u"), PW, "standard", None))
    refused(lambda: lone.create_user(grid.name("w"), PW, "worker", None))
    # ... and reading through the group bits: absent groups are no group either.
    refused(lambda: lone.get_data(bob_data["uid"]))
    assert bob.whoami()["uid"] == bob_row["uid"]  # still enabled, tokens alive


# --- hole 3: results past their data's rights -------------------------------------------

def _completed_job(grid: Grid, owner: Client, tmp_path: Path) -> dict:
    """A public job run to completion by its owner's own worker, through the worker API."""
    app = grid.shared_app()
    cred = owner.enroll_worker()
    worker = grid.server.client(cred["login"], cred["password"])
    host = grid.host(worker, app)
    job = owner.submit(app, access_rights="755")
    assert worker.request_work(host)["work"]["uid"] == job["uid"]
    results = tmp_path / "results.tar.gz"
    results.write_bytes(b"not really a tarball, but the owner's results")
    worker.upload_result(job["uid"], results)
    worker.report(job["uid"], "COMPLETED", exit_code=0)
    return owner.get_work(job["uid"])


def test_results_keep_their_own_rights(grid: Grid, tmp_path: Path) -> None:
    """Job 755, its results chmod 700 by the owner: nobody else reads them, whatever the
    path (the job's result route, the data routes, the data list)."""
    owner, _ = grid.user("standard")
    other, _ = grid.user("standard")
    job = _completed_job(grid, owner, tmp_path)
    assert job["status"] == "COMPLETED" and job["access_rights"] == "755"
    result = job["result"]
    assert owner.chmod(result, "700")["access_rights"] == "700"
    assert other.get_work(job["uid"])["result"] == result  # the job itself stays readable
    refused(lambda: other.download_result(job["uid"], tmp_path / "stolen.tar.gz"))
    refused(lambda: other.download_data(result, tmp_path / "stolen2.tar.gz"))
    refused(lambda: other.get_data(result))
    assert result not in {d["uid"] for d in other.list_data()}
    assert not (tmp_path / "stolen.tar.gz").exists()
    mine = owner.download_result(job["uid"], tmp_path / "mine.tar.gz")
    assert mine.read_bytes() == b"not really a tarball, but the owner's results"
