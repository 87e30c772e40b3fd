"""Hole 7 of issue 12: names must not shadow ids, and a name means only what its user
trusts. Attacks over the real API of a real server (TLS): a group admin names an app like
another app's uid; a group admin publishes ``root:99`` readable by all to capture everyone's
``--template root``; two owners of one name in the same trusted tier."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.support.processes import ServerProcess, run_cli
from tests.templates.conftest import push, random_file
from xwvm.client.sdk import ApiError, Client
from xwvm.server.db.engine import make_engine, make_sessionmaker
from xwvm.server.db.models import App


@dataclass
class World:
    server: ServerProcess
    admin: Client
    tmp: Path

    def user(self, login: str) -> Client:
        c = Client(self.server.url, self.server.ca)
        c.login(login, f"{login}-password-1")
        return c

    def template(self, owner: Client, name: str, version: str, **kw: str) -> dict:
        disk = random_file(self.tmp / f"{name}-{version}-{owner.whoami()['login']}", 4096)
        return push(owner, name, version, {"disk": disk}, **kw)


@pytest.fixture(scope="module")
def world(shared_server: ServerProcess,
          tmp_path_factory: pytest.TempPathFactory) -> World:
    admin = shared_server.client()
    for group in ("cms", "atlas"):
        admin.create_group(group)
    for login, rights, group in (("mallory", "group_admin", "cms"),
                                 ("trent", "group_admin", "cms"),
                                 ("nogroup-admin", "group_admin", None),
                                 ("carl", "standard", "cms"),
                                 ("victor", "standard", "atlas"),
                                 ("nina", "standard", None)):
        admin.create_user(login, f"{login}-password-1", rights, group)
    return World(shared_server, admin, tmp_path_factory.mktemp("names"))


@pytest.fixture(scope="module")
def sessions(shared_server: ServerProcess) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(f"sqlite:///{shared_server.data_dir / 'xwvm.db'}")
    yield make_sessionmaker(engine)
    engine.dispose()


def _refused(call, status: int, code: str) -> ApiError:
    with pytest.raises(ApiError) as e:
        call()
    assert (e.value.status, e.value.code) == (status, code), e.value.message
    return e.value


def test_an_app_cannot_be_named_like_an_id(world: World) -> None:
    real = world.admin.create_app("analysis", kind="shared")
    mallory = world.user("mallory")
    uid = real["uid"]
    for name in (uid, uid.upper(), uid.replace("-", "")):
        err = _refused(lambda n=name: mallory.create_app(n, kind="shared"), 400, "name_is_id")
        assert uid not in err.message.lower() and uid.replace("-", "") not in err.message
    _refused(lambda: mallory.create_app(f"xw://server/{uid}", kind="shared"), 400, "bad_name")
    assert [a["uid"] for a in world.admin.list_apps() if a["name"].lower() in (
        uid, uid.replace("-", ""))] == []


def test_an_id_always_means_that_app(world: World,
                                     sessions: sessionmaker[Session]) -> None:
    """Even if a row named like an id existed (made before the check, or by hand), the id,
    bare or in an xw:// reference, reaches the real app: never the one named like it."""
    real = world.admin.create_app("fitter", kind="shared")
    mallory = world.user("mallory")
    with sessions() as db:
        fake = App(name=real["uid"], kind="shared", owner_uid=mallory.whoami()["uid"],
                   group_uid=None, access_rights=0o755)
        db.add(fake)
        db.commit()
        fake_uid = fake.uid
    victor = world.user("victor")
    for ref in (real["uid"], real["uid"].upper(), f"xw://elsewhere/{real['uid']}"):
        got = victor.post("/works", {"app": ref, "command": "fitter"})
        assert got["app"] == real["uid"] != fake_uid, ref
    assert victor.get_app(real["uid"])["uid"] == real["uid"]
    assert victor.get_app(real["uid"].upper())["uid"] == real["uid"]
    _refused(lambda: victor.post("/works", {"app": "xw://server/not-a-uid"}), 400, "bad_uid")


def test_a_published_root_99_does_not_capture_root(world: World) -> None:
    mine = world.template(world.admin, "root", "6.30")
    world.template(world.user("mallory"), "root", "99")            # group cms
    world.template(world.user("nogroup-admin"), "root", "100")     # no group at all
    for login in ("victor", "nina"):                # outside cms, and in no group
        victim = world.user(login)
        job = victim.submit(template="root", command="true")
        assert job["template"] == mine["uid"], login
        assert victim.get_template("root")["uid"] == mine["uid"]
        # An explicit version is looked for only in the namespace the victim trusts.
        err = _refused(lambda v=victim: v.submit(template="root:99", command="true"), 404,
                       "unknown_template")
        assert "mallory" in err.message
        assert [c["owner"] for c in err.details["candidates"]] == ["mallory"]


def test_ambiguous_names_are_an_error_naming_the_candidates(world: World) -> None:
    a = world.template(world.user("mallory"), "tool", "1")
    b = world.template(world.user("trent"), "tool", "2")
    carl = world.user("carl")  # in cms, where both mallory and trent published "tool"
    for call in (lambda: carl.submit(template="tool", command="true"),
                 lambda: carl.get_template("tool")):
        err = _refused(call, 409, "ambiguous_name")
        for t, owner in ((a, "mallory"), (b, "trent")):
            assert t["uid"] in err.message and owner in err.message, err.message
        assert sorted((c["uid"], c["owner"]) for c in err.details["candidates"]) == sorted(
            [(a["uid"], "mallory"), (b["uid"], "trent")])
    assert carl.submit(template=a["uid"], command="true")["template"] == a["uid"]
    # Each group admin's own name still means their own template.
    assert world.user("trent").get_template("tool")["uid"] == b["uid"]


def test_names_of_untrusted_owners_resolve_only_by_id(world: World) -> None:
    mallory = world.user("mallory")
    gtool = mallory.create_app("gtool", kind="shared")
    assert world.user("carl").submit("gtool")["app"] == gtool["uid"]  # carl is in cms
    victor = world.user("victor")
    err = _refused(lambda: victor.submit("gtool"), 404, "unknown_app")
    assert err.details["candidates"] == [{"uid": gtool["uid"], "owner": "mallory",
                                          "version": 1}]
    assert victor.submit(gtool["uid"])["app"] == gtool["uid"]


def test_a_template_cannot_be_named_like_an_id(world: World) -> None:
    mallory = world.user("mallory")
    disk = random_file(world.tmp / "shadow", 4096)
    up = mallory.upload_file(disk)
    target = world.admin.list_templates()[0]["uid"]
    _refused(lambda: mallory.create_template({
        "name": target, "version": "1", "artifacts": [
            {"role": "disk", "format": "qcow2", "upload": up["uid"]}]}), 400, "name_is_id")


def test_data_cannot_be_named_like_an_id(world: World) -> None:
    f = world.tmp / "plain.txt"
    f.write_text("x")
    victor = world.user("victor")
    real = victor.upload_data(f)
    for name in (real["uid"], f"xw://server/{real['uid']}"):
        _refused(lambda n=name: victor.upload_data(f, name=n), 400, "name_is_id")


def test_the_cli_passes_xw_references_as_ids(world: World, tmp_path: Path) -> None:
    """``xwvm submit xw://SERVER/UID`` and ``xwvm template show xw://SERVER/UID`` reach
    that object when SERVER is this server; another server's reference is refused."""
    home, pw = tmp_path / "cli", tmp_path / "pw"
    pw.write_text("victor-password-1")
    run_cli(["login", "--server", world.server.url, "--ca", str(world.server.ca), "--user",
             "victor", "--password-file", str(pw)], home)
    app = world.admin.create_app("xwref-app", kind="shared")
    tpl = world.template(world.admin, "xwref-tpl", "1")
    here = "127.0.0.1"  # the host of the URL logged in to (or the server's public name)
    [job] = json.loads(run_cli(["submit", f"xw://{here}/{app['uid']}", "--format",
                                "json"], home).stdout)
    assert job["app"] == app["uid"]
    shown = json.loads(run_cli(["template", "show", f"xw://{here}/{tpl['uid']}",
                                "--format", "json"], home).stdout)
    assert shown["uid"] == tpl["uid"]
    # another server's reference is never taken for one of this server's objects
    for args in (["submit", f"xw://elsewhere/{app['uid']}"],
                 ["template", "show", f"xw://elsewhere/{tpl['uid']}"]):
        refused = run_cli(args, home, check=False)
        assert refused.returncode == 1 and "names an object of server elsewhere" in \
            refused.stderr, refused


def test_a_squatted_name_does_not_block_its_owner(world: World) -> None:
    """Names are unique per owner (migration 0010), not server-wide: a group admin who
    takes ``geant4`` and ``geant4:11.2`` first blocks nobody, and captures nobody."""
    mallory = world.user("mallory")
    squat_app = mallory.create_app("geant4", kind="shared")
    squat_tpl = world.template(mallory, "geant4", "11.2")
    app = world.admin.create_app("geant4", kind="shared")
    tpl = world.template(world.admin, "geant4", "11.2")
    assert app["uid"] != squat_app["uid"] and tpl["uid"] != squat_tpl["uid"]
    victor = world.user("victor")                   # outside cms: the admin's, by name
    assert victor.get_app("geant4")["uid"] == app["uid"]
    assert victor.get_template("geant4:11.2")["uid"] == tpl["uid"]
    carl = world.user("carl")                       # in cms: his group's own
    assert carl.get_app("geant4")["uid"] == squat_app["uid"]
    # One owner still cannot have two of one name, nor two super users (they publish as one).
    _refused(lambda: mallory.create_app("geant4", kind="shared"), 409, "exists")
    _refused(lambda: world.template(world.admin, "geant4", "11.2"), 409, "template_exists")
