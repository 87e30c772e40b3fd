"""VM context objects through the REST API of a real server: validation, rights, submit."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.support.processes import ServerProcess
from xwvm.client.sdk import ApiError, Client


def ssh_key(comment: str = "test") -> str:
    pub = ed25519.Ed25519PrivateKey.generate().public_key()
    raw = pub.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return f"{raw.decode()} {comment}"


def good_doc() -> dict:
    return {"ssh_authorized_keys": [ssh_key("alice@lab")], "env": {"NEVENTS": "100"},
            "network": "none", "hostname": "fit-1"}


@pytest.fixture(scope="module")
def admin(shared_server: ServerProcess) -> Client:
    return shared_server.client()


@pytest.fixture(scope="module")
def bob(shared_server: ServerProcess, admin: Client) -> Client:
    admin.create_user("bob", "bob-password-1", "standard")
    return shared_server.client("bob", "bob-password-1")


@pytest.fixture(scope="module")
def app_name(admin: Client, tmp_path_factory: pytest.TempPathFactory) -> str:
    script = tmp_path_factory.mktemp("app") / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    data = admin.upload_data(script)
    admin.create_app("ctxapp", {"linux/x86_64": data["uid"]})
    return "ctxapp"


def raw_post(server: ServerProcess, c: Client, path: str, body: dict) -> requests.Response:
    return requests.post(f"{server.url}/api/v1{path}", json=body, verify=str(server.ca),
                         headers={"Authorization": f"Bearer {c.token}"}, timeout=30)


def test_create_show_list_chmod_delete(admin: Client) -> None:
    doc = good_doc()
    ctx = admin.create_context("fit", doc)
    assert ctx["name"] == "fit" and ctx["document"] == doc
    assert ctx["access_rights"] == "700"  # private by default: contexts may hold secrets
    assert ctx["uri"].endswith(ctx["uid"])
    assert admin.get_context(ctx["uid"])["document"] == doc
    assert ctx["uid"] in [c["uid"] for c in admin.list_contexts()]
    assert admin.chmod(ctx["uid"], "755")["kind"] == "context"
    admin.delete_context(ctx["uid"])
    with pytest.raises(ApiError) as e:
        admin.get_context(ctx["uid"])
    assert e.value.status == 404
    kinds = [ev["kind"] for ev in admin.events() if ev["object"] == ctx["uid"]]
    assert kinds[0] == "context_created" and "chmod" in kinds
    assert kinds[-2:] == ["context_deleted", "refused"]  # the GET after deletion: a 404


@pytest.mark.parametrize("doc, path", [
    ({"ssh_authorized_keys": ["ssh-ed25519 AAAAnotakey x"]}, "$.ssh_authorized_keys[0]"),
    ({"env": {"9LIVES": "1"}}, '$.env["9LIVES"]'),
    ({"network": "server", "colour": "blue"}, "$.colour"),
    ({"env": {"BIG": "x" * 4000}, "files": [{"path": f"/home/xwvm/f{i}", "content": "y" * 60000}
                                            for i in range(5)]}, "$"),
])
def test_bad_documents_get_400_with_paths(shared_server: ServerProcess, admin: Client,
                                          doc: dict, path: str) -> None:
    before = admin.list_contexts()
    resp = raw_post(shared_server, admin, "/contexts", {"name": "bad", "document": doc})
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert body["error"] == "invalid_context"
    assert path in [d["path"] for d in body["details"]]
    assert all(d["message"] for d in body["details"])
    assert admin.list_contexts() == before


def test_request_shape_is_checked(shared_server: ServerProcess, admin: Client) -> None:
    resp = raw_post(shared_server, admin, "/contexts", {"name": "x", "document": ["a"]})
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_body"


def test_access_rights_submit_and_in_use(admin: Client, bob: Client, app_name: str) -> None:
    private = admin.create_context("private", good_doc(), access_rights="700")
    public = admin.create_context("public", good_doc(), access_rights="755")
    assert (private["access_rights"], public["access_rights"]) == ("700", "755")
    with pytest.raises(ApiError) as e:
        bob.get_context(private["uid"])
    assert e.value.status == 403
    assert bob.get_context(public["uid"])["name"] == "public"
    seen = [c["uid"] for c in bob.list_contexts()]
    assert public["uid"] in seen and private["uid"] not in seen
    with pytest.raises(ApiError) as e:
        bob.delete_context(public["uid"])  # 755: no write access for others
    assert e.value.status == 403

    with pytest.raises(ApiError) as e:
        bob.submit(app_name, context=private["uid"])
    assert e.value.status == 403
    assert bob.list_works() == []
    work = bob.submit(app_name, context=public["uid"])
    assert work["status"] == "PENDING" and work["context"] == public["uid"]
    assert bob.get_work(work["uid"])["context"] == public["uid"]
    assert bob.submit(app_name)["context"] is None

    with pytest.raises(ApiError) as e:
        admin.delete_context(public["uid"])
    assert e.value.status == 409 and e.value.code == "in_use"
    bob.work_action(work["uid"], "abort")
    admin.delete_context(public["uid"])
    admin.delete_context(private["uid"])


def test_unknown_context_on_submit(admin: Client, app_name: str) -> None:
    with pytest.raises(ApiError) as e:
        admin.submit(app_name, context="00000000-0000-0000-0000-000000000000")
    assert e.value.status == 404


def test_migration_0002_upgrades_and_downgrades(tmp_path: Path) -> None:
    from alembic import command
    from sqlalchemy import inspect

    from xwvm.server.db.engine import alembic_config, make_engine, migrate
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    migrate(engine)
    assert "contexts" in inspect(engine).get_table_names()
    assert "context_uid" in [c["name"] for c in inspect(engine).get_columns("works")]
    command.downgrade(alembic_config(engine), "0001")
    assert "contexts" not in inspect(engine).get_table_names()
    engine.dispose()
