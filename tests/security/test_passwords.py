"""Passwords as an attacker meets them: throttled guessing (per account and per address,
counted in the database), and tokens revoked by a password change or a disabled account."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
import requests

from tests.security.conftest import (
    LOGIN_MAX_FAILURES,
    LOGIN_MAX_FAILURES_PER_ADDRESS,
    LOGIN_WINDOW_S,
    SecurityServer,
)
from tests.support.processes import run_cli
from xwvm.client.sdk import ApiError, Client

PASSWORD = "user-password-1"


def _login(sec: SecurityServer, login: str, password: str) -> requests.Response:
    return requests.post(f"{sec.server.url}/api/v1/auth/login", verify=str(sec.server.ca),
                         json={"login": login, "password": password}, timeout=30)


def _user(sec: SecurityServer, rights: str = "standard") -> str:
    login = f"u-{uuid.uuid4().hex[:8]}"
    sec.server.client().create_user(login, PASSWORD, rights)
    return login


def _refused(c: Client, code: str) -> None:
    with pytest.raises(ApiError) as e:
        c.whoami()
    assert (e.value.status, e.value.code) == (401, code), e.value


def test_guessing_a_password_is_throttled_then_allowed_after_the_window(
        sec: SecurityServer) -> None:
    login = _user(sec)
    for _ in range(LOGIN_MAX_FAILURES):
        assert _login(sec, login, "wrong-guess").status_code == 401
    for password in ("wrong-guess", PASSWORD):  # even the right password waits
        resp = _login(sec, login, password)
        assert resp.status_code == 429, resp.text
        assert resp.json()["error"] == "too_many_attempts"
        assert 1 <= int(resp.headers["Retry-After"]) <= LOGIN_WINDOW_S
    # other accounts are not locked out by this one's attacker
    assert _login(sec, _user(sec), PASSWORD).status_code == 200
    time.sleep(LOGIN_WINDOW_S + 0.5)
    assert _login(sec, login, PASSWORD).status_code == 200
    events = sec.server.client().events()
    assert any(e["kind"] == "login_refused" and "too_many_attempts" in (e["detail"] or "")
               and login in e["detail"] for e in events)


def test_guessing_many_accounts_from_one_address_is_throttled(sec: SecurityServer) -> None:
    time.sleep(LOGIN_WINDOW_S + 0.5)  # a clean window for this address
    login = _user(sec)
    for _ in range(LOGIN_MAX_FAILURES_PER_ADDRESS):
        assert _login(sec, f"nobody-{uuid.uuid4().hex[:6]}", "guess").status_code == 401
    resp = _login(sec, login, PASSWORD)
    assert resp.status_code == 429 and "address" in resp.json()["message"], resp.text
    time.sleep(LOGIN_WINDOW_S + 0.5)
    assert _login(sec, login, PASSWORD).status_code == 200


def test_password_change_revokes_every_token(sec: SecurityServer) -> None:
    login = _user(sec)
    first, second = sec.server.client(login, PASSWORD), sec.server.client(login, PASSWORD)
    with pytest.raises(ApiError) as e:
        first.change_password("not-the-password", "new-password-2")
    assert e.value.code == "bad_credentials"
    with pytest.raises(ApiError) as e:
        first.change_password(PASSWORD, "short")
    assert e.value.code == "weak_password"
    first.change_password(PASSWORD, "new-password-2")
    assert first.whoami()["login"] == login  # the new token the answer carried
    _refused(second, "token_revoked")
    assert _login(sec, login, PASSWORD).status_code == 401
    assert _login(sec, login, "new-password-2").status_code == 200


def test_disabled_user_loses_tokens_and_cannot_log_in(sec: SecurityServer) -> None:
    admin = sec.server.client()
    login = _user(sec)
    uid = admin.user_by_login(login)["uid"]
    c = sec.server.client(login, PASSWORD)
    with pytest.raises(ApiError) as e:  # a standard user disables nobody
        c.set_user_enabled(admin.whoami()["uid"], False)
    assert e.value.status == 403
    assert admin.set_user_enabled(uid, False)["enabled"] is False
    _refused(c, "account_disabled")  # its tokens were revoked with it: said why
    resp = _login(sec, login, PASSWORD)
    assert resp.status_code == 401 and resp.json()["error"] == "account_disabled", resp.text
    with pytest.raises(ApiError) as e:
        admin.set_user_enabled(admin.whoami()["uid"], False)
    assert e.value.code == "own_account"
    admin.set_user_enabled(uid, True)
    assert sec.server.client(login, PASSWORD).whoami()["enabled"] is True


def test_cli_passwd_disable_enable(sec: SecurityServer, tmp_path: Path) -> None:
    srv, login = sec.server, _user(sec)
    (tmp_path / "old").write_text(PASSWORD)
    (tmp_path / "new").write_text("cli-password-3")
    home, admin_home = tmp_path / "u", tmp_path / "a"
    run_cli(["login", "--server", srv.url, "--ca", str(srv.ca), "--user", login,
             "--password-file", str(tmp_path / "old")], home)
    run_cli(["user", "passwd", "--old-password-file", str(tmp_path / "old"),
             "--new-password-file", str(tmp_path / "new")], home)
    assert login in run_cli(["whoami"], home).stdout  # the saved token was renewed
    run_cli(["login", "--server", srv.url, "--ca", str(srv.ca), "--user", "admin",
             "--password-file", str(srv.password_file)], admin_home)
    assert "disabled" in run_cli(["user", "disable", login], admin_home).stdout
    out = run_cli(["whoami"], home, check=False)
    assert out.returncode == 1 and f"account {login} is disabled" in out.stderr
    again = run_cli(["login", "--server", srv.url, "--ca", str(srv.ca), "--user", login,
                     "--password-file", str(tmp_path / "new")], home, check=False)
    assert again.returncode == 1 and f"account {login} is disabled" in again.stderr
    wrong = run_cli(["login", "--server", srv.url, "--ca", str(srv.ca), "--user", login,
                     "--password-file", str(tmp_path / "old")], home, check=False)
    assert "wrong login or password" in wrong.stderr  # no hint without the password
    run_cli(["user", "enable", login], admin_home)
    run_cli(["login", "--server", srv.url, "--ca", str(srv.ca), "--user", login,
             "--password-file", str(tmp_path / "new")], home)
