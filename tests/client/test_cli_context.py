"""`xwvm context ...` and `xwvm submit --context/--ssh-key` against a real server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

import contextualizer
from tests.support.processes import ServerProcess, run_cli
from xwvm.client.sdk import Client


def write_key(path: Path, comment: str = "alice@lab") -> str:
    pub = ed25519.Ed25519PrivateKey.generate().public_key()
    raw = pub.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    key = f"{raw.decode()} {comment}"
    path.write_text(key + "\n")
    return key


@pytest.fixture(scope="module")
def home(shared_server: ServerProcess,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A config dir logged in as admin (one server for the module: CLI calls are slow)."""
    home = tmp_path_factory.mktemp("cli")
    run_cli(["login", "--server", shared_server.url, "--ca", str(shared_server.ca), "--user",
             "admin", "--password-file", str(shared_server.password_file)], home)
    yield home


@pytest.fixture(scope="module")
def admin(shared_server: ServerProcess) -> Client:
    return shared_server.client()


def list_uids(home: Path) -> list[str]:
    return [c["uid"] for c in json.loads(run_cli(["context", "list", "--format", "json"],
                                                 home).stdout)]


def test_create_show_list_rm(home: Path, tmp_path: Path) -> None:
    key = write_key(tmp_path / "k.pub")
    spec = tmp_path / "ctx.yaml"
    spec.write_text("env:\n  A: '1'\n  B: from-file\nhostname: from-file\n")
    out = run_cli(["context", "create", "fit", "--file", str(spec), "--ssh-key",
                   str(tmp_path / "k.pub"), "--env", "B=2", "--network", "none",
                   "--format", "json"], home).stdout
    [ctx] = json.loads(out)
    assert ctx["name"] == "fit" and ctx["access_rights"] == "700"
    shown = json.loads(run_cli(["context", "show", ctx["uid"], "--format", "json"],
                               home).stdout)
    assert shown["document"] == {"ssh_authorized_keys": [key], "env": {"A": "1", "B": "2"},
                                 "hostname": "from-file", "network": "none"}
    assert yaml.safe_load(run_cli(["context", "show", ctx["uid"]], home).stdout) == shown
    table = run_cli(["context", "list"], home).stdout.splitlines()
    assert table[0].split()[:2] == ["uid", "name"] and ctx["uid"] in table[1]
    assert "removed" in run_cli(["context", "rm", ctx["uid"]], home).stdout
    assert ctx["uid"] not in list_uids(home)


def test_bad_documents_fail_before_upload(home: Path, tmp_path: Path) -> None:
    before = list_uids(home)
    bad_key = tmp_path / "bad.pub"
    bad_key.write_text("ssh-ed25519 AAAAnotakey x\n")
    unknown = tmp_path / "unknown.json"
    unknown.write_text('{"network": "server", "colour": "blue"}')
    for args, path in [(["--ssh-key", str(bad_key)], "$.ssh_authorized_keys[0]"),
                       (["--env", "9LIVES=1"], '$.env["9LIVES"]'),
                       (["--file", str(unknown)], "$.colour")]:
        res = run_cli(["context", "create", "bad", *args], home, check=False)
        assert res.returncode == 1, res
        assert path in res.stderr and "invalid context document" in res.stderr
    assert list_uids(home) == before


def test_iso_from_file_without_login_and_from_uid(home: Path, tmp_path: Path,
                                                  shared_server: ServerProcess) -> None:
    key = write_key(tmp_path / "k.pub")
    spec = tmp_path / "ctx.json"
    spec.write_text(json.dumps({"ssh_authorized_keys": [key], "env": {"TOKEN": "s3"},
                                "network": "internet"}))
    iso = tmp_path / "file.iso"
    res = run_cli(["context", "iso", str(spec), "-o", str(iso), "--job-uid", "job-1"],
                  tmp_path / "nobody")
    assert "preview" in res.stdout
    ctx = contextualizer.read_iso(iso)
    assert (ctx.job_uid, ctx.owner, ctx.server_url) == ("job-1", "preview", "https://localhost")
    assert list(ctx.ssh_authorized_keys) == [key]
    assert dict(ctx.env) == {"TOKEN": "s3"} and ctx.network.value == "internet"

    not_file = run_cli(["context", "iso", "00000000-0000-0000-0000-000000000000", "-o",
                        str(tmp_path / "x.iso")], tmp_path / "nobody", check=False)
    assert not_file.returncode == 1 and "login" in not_file.stderr

    [made] = json.loads(run_cli(["context", "create", "for-iso", "--ssh-key",
                                 str(tmp_path / "k.pub"), "--network", "none", "--format",
                                 "json"], home).stdout)
    iso2 = tmp_path / "uid.iso"
    run_cli(["context", "iso", made["uid"], "-o", str(iso2)], home)
    ctx2 = contextualizer.read_iso(iso2.read_bytes())
    assert list(ctx2.ssh_authorized_keys) == [key] and ctx2.network.value == "none"
    assert ctx2.owner == "admin" and ctx2.server_url == shared_server.url
    assert ctx2.server_ca_pem == shared_server.ca.read_text()
    assert ctx2.credential == "preview-no-credential"


def test_submit_with_inline_and_named_context(home: Path, tmp_path: Path,
                                              admin: Client) -> None:
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    admin.create_app("ctxcli", {"linux/x86_64": admin.upload_data(script)["uid"]})
    key = write_key(tmp_path / "k.pub")
    [work] = json.loads(run_cli(["submit", "ctxcli", "--ssh-key", str(tmp_path / "k.pub"),
                                 "--env", "A=1", "--format", "json"], home).stdout)
    assert work["status"] == "PENDING" and work["context"] and work["env"] == {"A": "1"}
    inline = admin.get_context(work["context"])
    assert inline["document"] == {"ssh_authorized_keys": [key], "env": {"A": "1"}}
    assert inline["access_rights"] == "700"

    [again] = json.loads(run_cli(["submit", "ctxcli", "--context", work["context"],
                                  "--format", "json"], home).stdout)
    assert again["context"] == work["context"]
    [plain] = json.loads(run_cli(["submit", "ctxcli", "--env", "A=1", "--format", "json"],
                                 home).stdout)
    assert plain["context"] is None

    busy = run_cli(["context", "rm", work["context"]], home, check=False)
    assert busy.returncode == 1 and "in_use" in busy.stderr
