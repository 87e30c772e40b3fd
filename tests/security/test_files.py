"""The server's files as a local attacker sees them: after a real `xwvm server init` and a
real `server run` that stored a blob, opened an upload and logged users in, nothing in the
data directory is readable or writable by group or others (another local account cannot
copy the database and its token secret); a loosened data directory is tightened at start;
and a token re-signed with a stolen secret and a forged expiry dies with its stored row."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import ServerProcess
from xwvm.client.sdk import ApiError, Client

AUDITOR = "xwvm-audit"  # a throwaway local account, made by this test when it runs as root


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    # Under a world-traversable directory (pytest's own are 0700, which would hide the
    # data directory from another account whatever its modes).
    root = Path(tempfile.mkdtemp(prefix="xwvm-files-", dir="/tmp"))
    root.chmod(0o755)
    srv = ServerProcess(root).init()
    yield srv
    srv.stop()
    shutil.rmtree(root, ignore_errors=True)


def _loose(top: Path) -> list[str]:
    """Every path under ``top`` (itself included) that group or others may touch."""
    found = []
    for path in [top, *top.rglob("*")]:
        mode = path.lstat().st_mode
        if stat.S_IMODE(mode) & 0o077:
            found.append(f"{path.relative_to(top.parent)} {stat.filemode(mode)}")
    return found


def _auditor() -> str | None:
    if os.geteuid() != 0 or not shutil.which("runuser") or not shutil.which("useradd"):
        return None
    if subprocess.run(["id", AUDITOR], capture_output=True).returncode != 0:
        made = subprocess.run(["useradd", "--system", "--no-create-home", AUDITOR],
                              capture_output=True)
        if made.returncode != 0:
            return None
    return AUDITOR


def _read_as(user: str, path: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["runuser", "-u", user, "--", "cat", str(path)],
                          capture_output=True, timeout=30)


def test_init_then_a_run_leaves_nothing_readable_by_others(server: ServerProcess,
                                                           tmp_path: Path) -> None:
    data = server.data_dir
    assert _loose(data) == [], "after server init"
    # An admin's careless copy or chmod: the server tightens the modes when it starts.
    data.chmod(0o755)
    (data / "xwvm.db").chmod(0o644)
    (data / "server.yaml").chmod(0o666)
    server.start()
    admin = server.client()
    admin.create_user("filer", "filer-password-1", "standard")
    user = server.client("filer", "filer-password-1")
    blob = tmp_path / "input.txt"
    blob.write_bytes(b"private bytes\n" * 100)
    user.upload_data(blob, access_rights="700")
    admin.create_upload(4096, hashlib.sha256(b"x" * 4096).hexdigest())  # a part file, open
    assert (data / "xwvm.db-wal").exists(), "SQLite's WAL is created while the server runs"
    assert list((data / "blobs").rglob("*.part")), "the open upload's part file"
    assert _loose(data) == [], "while the server runs"
    auditor = _auditor()
    assert auditor is not None, "run as root (as CI does) to try the files as another account"
    for name in ("xwvm.db", "xwvm.db-wal", "server.yaml", "ca-key.pem"):
        attempt = _read_as(auditor, data / name)
        assert attempt.returncode != 0 and b"Permission denied" in attempt.stderr, name


def _token_parts(token: str) -> tuple[str, dict[str, object]]:
    prefix, payload, _mac = token.split(".")
    return prefix, json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def _sign(secret: bytes, prefix: str, claims: dict[str, object]) -> str:
    payload = base64.urlsafe_b64encode(json.dumps(claims, separators=(",", ":")).encode()
                                       ).rstrip(b"=").decode()
    mac = hmac.new(secret, f"{prefix}.{payload}".encode(), hashlib.sha256).digest()
    return f"{prefix}.{payload}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def test_token_with_forged_expiry_dies_with_its_stored_row(server: ServerProcess) -> None:
    """The attack of the audit: with the secret read from a copied database, re-sign an
    admin token's payload with an expiry in 2100; once the row's own expiry has passed
    (or an admin shortened it), the server must refuse it."""
    if server.proc is None:
        server.start()
    admin = server.client()
    assert admin.token is not None
    db = sqlite3.connect(server.data_dir / "xwvm.db")
    try:
        secret = bytes.fromhex(db.execute(
            "SELECT value FROM settings WHERE name = 'token_secret'").fetchone()[0])
        prefix, claims = _token_parts(admin.token)
        forged = _sign(secret, prefix, {**claims, "exp": 4102444800})  # 2100-01-01
        attacker = Client(server.url, server.ca)
        attacker.token = forged
        assert attacker.whoami()["login"] == "admin"  # the forgery itself is well made
        db.execute("UPDATE tokens SET expires_at = '2001-01-01 00:00:00.000000' "
                   "WHERE jti = ?", (claims["jti"],))
        db.commit()
    finally:
        db.close()
    with pytest.raises(ApiError) as e:
        attacker.whoami()
    assert (e.value.status, e.value.code) == (401, "token_expired")
