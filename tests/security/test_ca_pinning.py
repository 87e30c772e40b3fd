"""A first login to an unknown server: its CA fingerprint is shown and must be given; the CA
is pinned (not the server's certificate) only when it matches. Never trust on first use."""

from __future__ import annotations

from pathlib import Path

import requests

from tests.security.conftest import SecurityServer
from tests.support.processes import run_cli
from xwvm.server.pki import fingerprint


def _login(sec: SecurityServer, home: Path, *extra: str) -> tuple[int, str]:
    srv = sec.server
    proc = run_cli(["login", "--server", srv.url, "--user", "admin", "--password-file",
                    str(srv.password_file), *extra], home, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def test_the_ca_is_served_without_authentication(sec: SecurityServer) -> None:
    resp = requests.get(f"{sec.server.url}/api/v1/ca", verify=str(sec.server.ca), timeout=30)
    assert resp.status_code == 200 and resp.content == sec.server.ca.read_bytes()


def test_first_login_without_a_fingerprint_is_refused(sec: SecurityServer,
                                                      tmp_path: Path) -> None:
    rc, out = _login(sec, tmp_path)
    assert rc == 1
    assert fingerprint(sec.server.ca.read_bytes()) in out  # shown, to compare
    assert "--ca-fingerprint" in out and "logged in" not in out
    assert not (tmp_path / "session.json").exists() and not (tmp_path / "ca").exists()


def test_first_login_with_a_wrong_fingerprint_is_refused(sec: SecurityServer,
                                                         tmp_path: Path) -> None:
    rc, out = _login(sec, tmp_path, "--ca-fingerprint", "AB:" * 31 + "CD")
    assert rc == 1 and "NOT trusting" in out
    assert not (tmp_path / "session.json").exists()


def test_first_login_with_the_fingerprint_pins_the_ca(sec: SecurityServer,
                                                      tmp_path: Path) -> None:
    fp = fingerprint(sec.server.ca.read_bytes())
    rc, out = _login(sec, tmp_path, "--ca-fingerprint", fp.lower().replace(":", ""))
    assert rc == 0, out
    pinned = list((tmp_path / "ca").iterdir())
    assert [p.read_bytes() for p in pinned] == [sec.server.ca.read_bytes()]
    assert "admin" in run_cli(["whoami"], tmp_path).stdout  # later commands use the pin
