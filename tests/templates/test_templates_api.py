"""Templates over the real HTTPS API and the CLI: push -> pull round trip, signing,
lifecycle, access rights (group admins push, workers read only what their jobs boot),
and removal refused while jobs use a template."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import requests
from sqlalchemy.orm import Session, sessionmaker

from tests.support.processes import ServerProcess, run_cli
from tests.templates.conftest import (
    Keys,
    MiB,
    push,
    random_file,
    server_blob,
    set_job,
    sha,
    vm_job,
    worker_account,
)
from xwvm import signing
from xwvm.client.sdk import ApiError, Client
from xwvm.errors import XwvmError
from xwvm.server.db.models import Template
from xwvm.server.policy import Principal
from xwvm.server.rights import Level
from xwvm.server.services import templates as template_service


def _build_dir(root: Path, name: str, version: str) -> Path:
    """What 'xwvm template build' writes: disks, kernel, initrd and manifest.json."""
    out = root / "out"
    files = {"disk.qcow2": 3 * MiB + 17, "disk.vdi": MiB, "vmlinuz": 200_000,
             "initrd.img": 300_000, "packages.txt": 100}
    for fname, size in files.items():
        random_file(out / fname, size)
    art = [("disk.qcow2", "disk", "qcow2"), ("disk.vdi", "disk", "vdi"),
           ("vmlinuz", "kernel", "linux-kernel"), ("initrd.img", "initrd", "initramfs"),
           ("packages.txt", "packages", "text")]
    manifest = {"name": name, "version": version, "description": "test image",
                "spec": {"name": name}, "os": {"distribution": "debian",
                                               "release": "bookworm", "arch": "amd64"},
                "cmdline": "console=ttyS0 root=LABEL=xwvm-root ro", "shared_apps": ["root"],
                "min_memory_mb": 512, "min_cpus": 1,
                "artifacts": [{"file": f, "role": r, "format": fm,
                               "size": (out / f).stat().st_size, "sha256": sha(out / f),
                               "virtual_size": 8 * MiB if r == "disk" else None}
                              for f, r, fm in art]}
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_cli_push_sign_publish_pull_round_trip(server: ServerProcess, cli_home: Path,
                                               tmp_path: Path) -> None:
    out = _build_dir(tmp_path, "base", "1.0")
    _push_shows_a_draft(out, cli_home)
    kid = _keygen_publish_sign(tmp_path, cli_home)
    _pull_and_resume(out, tmp_path / "pulled", cli_home, kid)
    # pushing the same name and version again is refused
    again = run_cli(["template", "push", str(out)], cli_home, check=False)
    assert again.returncode != 0 and "template_exists" in again.stderr
    _deprecate_then_remove(cli_home)


def _push_shows_a_draft(out: Path, cli_home: Path) -> None:
    pushed = run_cli(["template", "push", str(out)], cli_home)
    assert "pushed template base:1.0" in pushed.stdout
    shown = json.loads(run_cli(["template", "show", "base:1.0", "--format", "json"],
                               cli_home).stdout)
    assert shown["status"] == "draft" and not shown["signed"]
    assert (shown["os"], shown["arch"], shown["min_memory_mb"]) == ("debian-bookworm",
                                                                     "x86_64", 512)
    assert sorted((a["role"], a["format"]) for a in shown["artifacts"]) == [
        ("disk", "qcow2"), ("disk", "vdi"), ("initrd", "initramfs"), ("kernel", "linux-kernel")]
    table = run_cli(["template", "show", "base:1.0"], cli_home).stdout
    [me] = json.loads(run_cli(["whoami", "--format", "json"], cli_home).stdout)
    login = me["login"]
    assert f"owner:          {login}" in table, table  # the login, not the uid
    qcow = next(a for a in shown["artifacts"] if a["format"] == "qcow2")
    assert (qcow["virtual_size"], qcow["chunk_count"]) == (8 * MiB, 1)


def _keygen_publish_sign(tmp_path: Path, cli_home: Path) -> str:
    """A signing key, the template published (unsigned: a warning), then signed; the key id."""
    kid = run_cli(["admin", "keygen", "-o", str(tmp_path / "keys")], cli_home).stdout.strip()
    priv = tmp_path / "keys" / signing.PRIVATE_KEY_FILE
    assert len(kid) == 16 and (priv.stat().st_mode & 0o777) == 0o600
    published = run_cli(["template", "publish", "base"], cli_home)
    assert "unsigned" in published.stderr  # allowed, with a warning
    run_cli(["template", "sign", "base:1.0", "--key", str(priv)], cli_home)
    listed = run_cli(["template", "list"], cli_home).stdout
    assert "base" in listed and "published" in listed and "true" in listed
    return kid


def _pull_and_resume(out: Path, pull_dir: Path, cli_home: Path, kid: str) -> None:
    run_cli(["template", "pull", "base", "-o", str(pull_dir), "--disk-format", "qcow2"],
            cli_home)
    assert (pull_dir / "disk.qcow2").read_bytes() == (out / "disk.qcow2").read_bytes()
    assert (pull_dir / "kernel.linux-kernel").read_bytes() == (out / "vmlinuz").read_bytes()
    assert not (pull_dir / "disk.vdi").exists()
    desc = json.loads((pull_dir / "template.json").read_text())
    assert desc["signatures"][0]["key_id"] == kid
    # an interrupted pull resumes: cut the file, leave the rest as .part
    part = pull_dir / "disk.vdi.part"
    part.write_bytes((out / "disk.vdi").read_bytes()[:300_000])
    run_cli(["template", "pull", "base:1.0", "-o", str(pull_dir), "--role", "disk"], cli_home)
    assert (pull_dir / "disk.vdi").read_bytes() == (out / "disk.vdi").read_bytes()


def _deprecate_then_remove(cli_home: Path) -> None:
    """Deprecated: no new job may use it; then removed."""
    assert "deprecated base:1.0" in run_cli(["template", "deprecate", "base:1.0"],
                                            cli_home).stdout
    shown = json.loads(run_cli(["template", "show", "base:1.0", "--format", "json"],
                               cli_home).stdout)
    assert shown["status"] == "deprecated"
    refused = run_cli(["submit", "--template", "base:1.0", "--command", "true"], cli_home,
                      check=False)
    assert refused.returncode != 0 and "deprecated" in refused.stderr, refused.stderr
    assert "removed template base:1.0" in run_cli(["template", "rm", "base:1.0"],
                                                  cli_home).stdout
    gone = run_cli(["template", "show", "base:1.0"], cli_home, check=False)
    assert gone.returncode != 0 and "unknown_template" in gone.stderr, gone.stderr


def test_download_has_etag_and_range(shared_server: ServerProcess, admin: Client,
                                     tmp_path: Path, keys: Keys) -> None:
    disk = random_file(tmp_path / "d.img", 2 * MiB)
    t = push(admin, "etag", "1", {"disk": disk}, key=keys.private)
    url = f"{shared_server.url}/api/v1/templates/{t['uid']}/artifacts/disk"
    h = {"Authorization": f"Bearer {admin.token}"}
    full = requests.get(url, headers=h, verify=str(shared_server.ca), timeout=30)
    assert full.headers["ETag"] == f'"{sha(disk)}"' and full.content == disk.read_bytes()
    again = requests.get(url, headers={**h, "If-None-Match": f'"{sha(disk)}"'},
                         verify=str(shared_server.ca), timeout=30)
    assert again.status_code == 304
    part = requests.get(url, headers={**h, "Range": "bytes=100-199"},
                        verify=str(shared_server.ca), timeout=30)
    assert part.status_code == 206 and part.content == disk.read_bytes()[100:200]
    chunks = admin.template_chunks(t["uid"], "disk")
    assert chunks["chunk_size"] == 4 * MiB and len(chunks["chunks"]) == 1


def test_server_checks_signatures(shared_server: ServerProcess, admin: Client,
                                  tmp_path: Path, keys: Keys) -> None:
    t = push(admin, "sig", "1", {"disk": random_file(tmp_path / "d", 1000)}, publish=False)
    good = signing.sign(t["manifest"], keys.private)
    forged = signing.sign(t["manifest"].replace('"1"', '"2"'), keys.private)
    with pytest.raises(ApiError) as e:
        admin.sign_template(t["uid"], good.public_key, forged.signature)
    assert e.value.code == "bad_signature"
    with pytest.raises(ApiError) as e:
        admin.sign_template(t["uid"], "bm90IGEga2V5", good.signature)
    assert e.value.code == "bad_key"
    signed = admin.sign_template("sig:1", good.public_key, good.signature)
    assert [s["key_id"] for s in signed["signatures"]] == [keys.key_id]
    again = admin.sign_template("sig:1", good.public_key, good.signature)
    assert len(again["signatures"]) == 1  # one signature per key


def test_group_admin_pushes_standard_user_may_not(shared_server: ServerProcess,
                                                  admin: Client, tmp_path: Path) -> None:
    admin.create_group("imaging")
    admin.create_user("tpl-std", "password-123", "standard", "imaging")
    admin.create_user("tpl-ga", "password-123", "group_admin", "imaging")
    std = shared_server.client("tpl-std", "password-123")
    ga = shared_server.client("tpl-ga", "password-123")
    t = push(ga, "ga-image", "1", {"disk": random_file(tmp_path / "d", 5000)})
    assert t["status"] == "published"
    for call in (lambda: std.create_template({"name": "x", "version": "1", "artifacts": [
                     {"role": "disk", "format": "raw", "upload": t["uid"]}]}),
                 lambda: std.publish_template(t["uid"]),
                 lambda: std.deprecate_template(t["uid"])):
        with pytest.raises(ApiError) as e:
            call()
        assert (e.value.status, e.value.code) == (403, "forbidden_level")
    assert std.get_template("ga-image")["uid"] == t["uid"]  # 755: readable
    ga.chmod(t["uid"], "700")
    with pytest.raises(ApiError) as e:
        std.get_template(t["uid"])
    assert e.value.code == "forbidden_access"


def test_lifecycle_and_find_for_submit(shared_server: ServerProcess, admin: Client,
                                       tmp_path: Path,
                                       server_db: sessionmaker[Session]) -> None:
    v1 = push(admin, "life", "1.9", {"disk": random_file(tmp_path / "a", 1000)})
    v2 = push(admin, "life", "1.10", {"disk": random_file(tmp_path / "b", 1000)})
    draft = push(admin, "life", "2.0", {"disk": random_file(tmp_path / "c", 1000)},
                 publish=False)
    admin.create_user("life-std", "password-123", "standard")
    std_uid = next(u["uid"] for u in admin.list_users() if u["login"] == "life-std")
    p = Principal(uid=std_uid, login="life-std", level=Level.STANDARD, group_uid=None)
    with server_db() as db:
        assert template_service.find_for_submit(db, p, "life").uid == v2["uid"]
        assert template_service.find_for_submit(db, p, "life:1.9").uid == v1["uid"]
        with pytest.raises(XwvmError) as e:
            template_service.find_for_submit(db, p, "life:2.0")
        assert e.value.code == "template_draft" and "publish it" in e.value.message
    admin.deprecate_template(v2["uid"])
    admin.chmod(v1["uid"], "754")  # others may read, not execute
    with server_db() as db:
        with pytest.raises(XwvmError) as e:
            template_service.find_for_submit(db, p, "life")
        assert e.value.code == "forbidden_access"
        with pytest.raises(XwvmError) as e:
            template_service.find_for_submit(db, p, v2["uid"])
        assert e.value.code == "template_deprecated"
        desc = template_service.describe(db.get(Template, v1["uid"])).to_json()
    assert desc["manifest"] == signing.canonical_manifest(desc)
    assert {"uid", "artifacts", "signatures", "cmdline"} <= set(desc)
    assert admin.get_template(draft["uid"])["status"] == "draft"


def test_worker_reads_only_templates_its_jobs_use(shared_server: ServerProcess, admin: Client,
                                                  tmp_path: Path,
                                                  server_db: sessionmaker[Session]) -> None:
    t = push(admin, "wk", "1", {"disk": random_file(tmp_path / "a", 1000)})
    w = worker_account(shared_server, admin)
    route = f"/templates/{t['uid']}/artifacts/disk"
    with pytest.raises(ApiError) as e:
        w.client.request("GET", route)
    assert (e.value.status, e.value.code) == (403, "forbidden_not_assigned")
    job = vm_job(server_db, admin.whoami()["uid"], t["uid"], "PENDING")
    with pytest.raises(ApiError):
        w.client.request("GET", route)  # pending: not on its host yet
    other = worker_account(shared_server, admin)
    set_job(server_db, job, status="RUNNING", host_uid=other.host_uid)
    with pytest.raises(ApiError):
        w.client.request("GET", route)  # another worker's job
    set_job(server_db, job, host_uid=w.host_uid)
    assert len(w.client.request("GET", route).content) == 1000
    assert w.client.get_template(t["uid"])["uid"] == t["uid"]
    set_job(server_db, job, status="COMPLETED")
    with pytest.raises(ApiError):
        w.client.request("GET", route)


def test_rm_refused_while_jobs_use_it(shared_server: ServerProcess, admin: Client,
                                      tmp_path: Path, server_db: sessionmaker[Session]) -> None:
    disk = random_file(tmp_path / "a", 1000)
    t = push(admin, "busy", "1", {"disk": disk})
    job = vm_job(server_db, admin.whoami()["uid"], t["uid"], "PENDING")
    with pytest.raises(ApiError) as e:
        admin.delete_template("busy:1")
    assert e.value.status == 409 and e.value.code == "in_use"
    assert e.value.details["jobs"] == [job]
    set_job(server_db, job, status="ABORTED")
    admin.delete_template("busy:1")
    assert not server_blob(shared_server, sha(disk)).exists()
    with pytest.raises(ApiError) as e:
        admin.get_template(t["uid"])
    assert e.value.code == "unknown_template"


def test_same_content_is_not_uploaded_twice(shared_server: ServerProcess, admin: Client,
                                            tmp_path: Path) -> None:
    kernel = random_file(tmp_path / "k", 100_000)
    push(admin, "dedup", "1", {"disk": random_file(tmp_path / "a", 1000), "kernel": kernel})
    up = admin.create_upload(100_000, sha(kernel))
    assert (up["status"], up["received"]) == ("complete", 100_000)
    t2 = admin.create_template({"name": "dedup", "version": "2", "artifacts": [
        {"role": "disk", "format": "raw", "upload": admin.upload_file(
            random_file(tmp_path / "b", 1000))["uid"]},
        {"role": "kernel", "format": "linux-kernel", "upload": up["uid"]}]})
    admin.delete_template("dedup:1")
    assert server_blob(shared_server, sha(kernel)).exists()  # version 2 still needs it
    assert os.path.getsize(server_blob(shared_server, sha(kernel))) == 100_000
    assert t2["artifacts"][1]["sha256"] == sha(kernel)
