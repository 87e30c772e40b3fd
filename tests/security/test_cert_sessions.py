"""Revoking a certificate ends the sessions it opened: a token got by logging in with a
certificate stops working once an admin revokes the certificate (server CA) or once the
outside CA's CRL on disk lists it."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.security.conftest import SecurityServer
from tests.support.processes import run_cli
from xwvm.client.sdk import ApiError, Client


def _sign(key: ec.EllipticCurvePrivateKey) -> Callable[[bytes], bytes]:
    return lambda data: key.sign(data, ec.ECDSA(hashes.SHA256()))


def _gone(client: Client) -> None:
    with pytest.raises(ApiError) as e:
        client.whoami()
    assert (e.value.status, e.value.code) == (401, "token_revoked"), e.value


def test_revoke_cert_ends_the_sessions_of_the_certificate(sec: SecurityServer,
                                                          tmp_path: Path) -> None:
    admin_home = tmp_path / "admin"
    run_cli(["login", "--server", sec.server.url, "--ca", str(sec.server.ca), "--user",
             "admin", "--password-file", str(sec.server.password_file)], admin_home)
    login = f"sess-{uuid.uuid4().hex[:8]}"
    sec.server.client().create_user(login, "session-user-pw-1", "standard")
    run_cli(["admin", "issue-cert", login, "-o", str(tmp_path / "c")], admin_home)
    pem = (tmp_path / "c" / "cert.pem").read_bytes()
    key = serialization.load_pem_private_key((tmp_path / "c" / "key.pem").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    by_cert = Client(sec.server.url, sec.server.ca)
    by_cert.x509_login(pem, _sign(key))
    by_password = sec.server.client(login, "session-user-pw-1")
    assert by_cert.whoami()["login"] == login
    serial = x509.load_pem_x509_certificate(pem).serial_number
    run_cli(["admin", "revoke-cert", format(serial, "x")], admin_home)
    _gone(by_cert)
    assert by_password.whoami()["login"] == login  # only what the certificate opened ends


def test_outside_crl_ends_the_sessions_of_the_certificate(sec: SecurityServer) -> None:
    pem, key, serial = sec.grid.issue("Ivy Grid")
    by_cert = Client(sec.server.url, sec.server.ca)
    by_cert.x509_login(pem, _sign(key))
    other_pem, other_key, _ = sec.grid.issue("Jon Grid")
    other = Client(sec.server.url, sec.server.ca)
    other.x509_login(other_pem, _sign(other_key))
    assert by_cert.whoami()["rights"] == "standard"
    sec.grid.write_crl(sec.grid_crl, [serial])
    try:
        _gone(by_cert)
        assert other.whoami()["rights"] == "standard"
    finally:
        sec.grid.write_crl(sec.grid_crl, [])
    _gone(by_cert)  # a session once ended stays ended when the CRL changes again


def test_a_session_never_outlives_its_certificate(sec: SecurityServer) -> None:
    pem, key, _ = sec.grid.issue("Kim Grid", end=dt.timedelta(minutes=10))
    client = Client(sec.server.url, sec.server.ca)
    answer = client.x509_login(pem, _sign(key))
    expires = dt.datetime.fromisoformat(answer["expires_at"])
    not_after = x509.load_pem_x509_certificate(pem).not_valid_after_utc
    assert expires <= not_after
    assert client.whoami()["login"].startswith("Kim")
