"""X.509 login by proof of key possession: certificates of the server CA (issued with
`xwvm admin issue-cert`) and of a trusted grid CA, and every way a certificate is refused."""

from __future__ import annotations

import base64
import datetime as dt
import json
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.security.conftest import Authority, SecurityServer
from tests.support import appkeys
from tests.support.processes import XWVM, run_cli
from xwvm.client.sdk import ApiError, Client


def _sign(key: ec.EllipticCurvePrivateKey) -> Callable[[bytes], bytes]:
    return lambda data: key.sign(data, ec.ECDSA(hashes.SHA256()))


def _client(sec: SecurityServer) -> Client:
    return Client(sec.server.url, sec.server.ca)


def _refused(sec: SecurityServer, pem: bytes, key: ec.EllipticCurvePrivateKey,
             code: str, *words: str) -> None:
    with pytest.raises(ApiError) as e:
        _client(sec).x509_login(pem, _sign(key))
    assert (e.value.status, e.value.code) == (401, code), e.value
    for word in words:
        assert word in e.value.message, e.value.message


@pytest.fixture(scope="module")
def admin_home(sec: SecurityServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("admin-cli")
    run_cli(["login", "--server", sec.server.url, "--ca", str(sec.server.ca), "--user",
             "admin", "--password-file", str(sec.server.password_file)], home)
    return home


@pytest.fixture(scope="module")
def server_ca(sec: SecurityServer) -> Authority:
    """The server CA itself, to forge what only it could sign (expired, wrong usage)."""
    d = sec.server.data_dir
    return Authority.load(d / "ca.pem", d / "ca-key.pem")


def _issue(sec: SecurityServer, admin_home: Path, tmp_path: Path) -> tuple[str, Path]:
    login = f"cert-{uuid.uuid4().hex[:8]}"
    sec.server.client().create_user(login, "cert-user-pw-1", "standard")
    out = run_cli(["admin", "issue-cert", login, "-o", str(tmp_path / login)], admin_home)
    assert "serial" in out.stdout
    return login, tmp_path / login


def test_issued_certificate_logs_in_through_the_cli(sec: SecurityServer, admin_home: Path,
                                                    tmp_path: Path) -> None:
    login, d = _issue(sec, admin_home, tmp_path)
    assert (d / "key.pem").stat().st_mode & 0o777 == 0o600
    home = tmp_path / "home"
    run_cli(["login", "--server", sec.server.url, "--ca", str(d / "ca.pem"), "--cert",
             str(d / "cert.pem"), "--key", str(d / "key.pem")], home)
    assert login in run_cli(["whoami"], home).stdout


def test_standard_user_cannot_issue_certificates(sec: SecurityServer) -> None:
    login = f"std-{uuid.uuid4().hex[:8]}"
    sec.server.client().create_user(login, "standard-pw-1", "standard")
    with pytest.raises(ApiError) as e:
        sec.server.client(login, "standard-pw-1").issue_cert(login, b"x")
    assert e.value.status == 403


def test_revoked_certificate_is_refused_and_listed_in_the_crl(
        sec: SecurityServer, admin_home: Path, tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    login, d = _issue(sec, admin_home, tmp_path)
    pem = (d / "cert.pem").read_bytes()
    key = serialization.load_pem_private_key((d / "key.pem").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert _client(sec).x509_login(pem, _sign(key))["user"]["login"] == login
    serial = x509.load_pem_x509_certificate(pem).serial_number
    run_cli(["admin", "revoke-cert", format(serial, "x")], admin_home)
    _refused(sec, pem, key, "cert_revoked", "revoked")
    crl = x509.load_pem_x509_crl(requests.get(f"{sec.server.url}/api/v1/ca/crl",
                                              verify=str(sec.server.ca), timeout=30).content)
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None


def test_unknown_ca_is_refused(sec: SecurityServer) -> None:
    pem, key, _ = Authority.create("Rogue CA").issue("admin")
    _refused(sec, pem, key, "unknown_ca", "not a trusted CA")


def test_forged_server_ca_certificate_not_issued_is_refused(sec: SecurityServer,
                                                            server_ca: Authority) -> None:
    pem, key, serial = server_ca.issue("admin", org="xwvm")  # signed, but never recorded
    _refused(sec, pem, key, "unknown_certificate", format(serial, "x"))


@pytest.mark.parametrize(("start", "end", "code", "word"), [
    (dt.timedelta(days=-10), dt.timedelta(days=-1), "cert_expired", "expired"),
    (dt.timedelta(days=1), dt.timedelta(days=10), "cert_not_yet_valid", "not valid yet"),
])
def test_certificate_outside_its_validity_is_refused(sec: SecurityServer,
                                                     start: dt.timedelta, end: dt.timedelta,
                                                     code: str, word: str) -> None:
    pem, key, _ = sec.grid.issue("Dana Grid", start=start, end=end)
    _refused(sec, pem, key, code, word)


def test_certificate_without_client_auth_is_refused(sec: SecurityServer) -> None:
    pem, key, _ = sec.grid.issue("Eve Grid", eku=[ExtendedKeyUsageOID.SERVER_AUTH])
    _refused(sec, pem, key, "bad_key_usage", "clientAuth")


def test_signature_by_another_key_is_refused(sec: SecurityServer) -> None:
    pem, _key, _ = sec.grid.issue("Fay Grid")
    _refused(sec, pem, ec.generate_private_key(ec.SECP256R1()), "bad_signature",
             "proof of key possession")


def test_replayed_challenge_is_refused(sec: SecurityServer) -> None:
    pem, key, _ = sec.grid.issue("Gus Grid")
    url, ca = f"{sec.server.url}/api/v1/auth/x509", str(sec.server.ca)
    challenge = requests.post(f"{url}/challenge", json={"certificate": pem.decode()},
                              verify=ca, timeout=30).json()
    body = {"certificate": pem.decode(), "nonce": challenge["nonce"],
            "signature": base64.b64encode(_sign(key)(challenge["to_sign"].encode())).decode()}
    first = requests.post(f"{url}/login", json=body, verify=ca, timeout=30)
    assert first.status_code == 200, first.text
    again = requests.post(f"{url}/login", json=body, verify=ca, timeout=30)
    assert (again.status_code, again.json()["error"]) == (401, "challenge_replayed")


def test_grid_certificate_maps_to_a_new_standard_user_never_an_existing_one(
        sec: SecurityServer) -> None:
    pem, key, _ = sec.grid.issue("admin")  # a grid CN that names the local admin
    first = _client(sec).x509_login(pem, _sign(key))["user"]
    assert first["login"] != "admin" and first["rights"] == "standard"
    pem2, key2, _ = sec.grid.issue("admin")  # same subject DN, new key: same user
    assert _client(sec).x509_login(pem2, _sign(key2))["user"]["uid"] == first["uid"]


def test_grid_crl_revokes(sec: SecurityServer) -> None:
    pem, key, serial = sec.grid.issue("Hal Grid")
    assert _client(sec).x509_login(pem, _sign(key))["user"]["rights"] == "standard"
    sec.grid.write_crl(sec.grid_crl, [serial])
    try:
        _refused(sec, pem, key, "cert_revoked", "CRL")
    finally:
        sec.grid.write_crl(sec.grid_crl, [])


def _project_accounts(admin_home: Path, tmp_path: Path, tag: str) -> tuple[Path, Path]:
    """The admin's commands of the security model: a project group, its worker account and
    a user (password in tmp_path/pw), and a certificate for the worker: (cert, key)."""
    cms, worker_login, alice = f"cms{tag}", f"w{tag}", f"alice{tag}"
    pw = tmp_path / "pw"
    pw.write_text("a-good-password-1\n")
    run_cli(["group", "add", cms], admin_home)
    for login, rights in ((worker_login, "worker"), (alice, "standard")):
        run_cli(["user", "add", login, "--rights", rights, "--group", cms,
                 "--password-file", str(pw)], admin_home)
    run_cli(["admin", "issue-cert", worker_login, "-o", str(tmp_path / "wcert")], admin_home)
    return tmp_path / "wcert" / "cert.pem", tmp_path / "wcert" / "key.pem"


def _assert_a_worker_needs_the_certificates_key(base: list[str], cert: Path,
                                                tmp_path: Path) -> None:
    """A worker started with another key, or with the certificate alone, does not start."""
    other_key = tmp_path / "other.pem"
    other_key.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    wrong = subprocess.run([*base, "--cert", str(cert), "--key", str(other_key),
                            "--max-jobs", "1"], capture_output=True, text=True, timeout=60)
    assert wrong.returncode != 0 and "signature" in (wrong.stdout + wrong.stderr).lower()
    half = subprocess.run([*base, "--cert", str(cert)], capture_output=True, text=True,
                          timeout=60)
    assert half.returncode != 0 and "give both --cert and --key" in half.stderr


def test_worker_account_of_a_project_runs_its_jobs_with_a_certificate(
        sec: SecurityServer, admin_home: Path, tmp_path: Path) -> None:
    """The admin's commands of the security model, then a worker that logs in with the
    certificate issued for its worker account and runs its project's job."""
    tag = uuid.uuid4().hex[:6]
    worker_login, alice = f"w{tag}", f"alice{tag}"
    cert, key = _project_accounts(admin_home, tmp_path, tag)
    alice_home = tmp_path / "alice"
    url, ca = sec.server.url, str(sec.server.ca)
    run_cli(["login", "--server", url, "--ca", ca, "--user", alice, "--password-file",
             str(tmp_path / "pw")], alice_home)
    script = tmp_path / "hello.sh"
    script.write_text('#!/bin/sh\necho "hello $*"\n')
    run_cli(["app", "send", f"hello{tag}", "--file", str(script), "--sign-key",
             str(appkeys.private_key())], admin_home)
    base = [*XWVM, "worker", "run", "--server", url, "--ca", ca, "--work-dir",
            str(tmp_path / "wd"), "--name", f"certw{tag}", "--hypervisor", "none",
            "--trusted-key", str(appkeys.public_key())]
    _assert_a_worker_needs_the_certificates_key(base, cert, tmp_path)
    worker = subprocess.Popen([*base, "--cert", str(cert), "--key", str(key),
                               "--max-jobs", "1"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        out = run_cli(["submit", f"hello{tag}", "--wait", "--timeout", "120", "--format",
                       "json", "--", "from", "x509"], alice_home, timeout=180)
        assert worker.wait(timeout=60) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
        log = worker.communicate()[0]
    [job] = json.loads(out.stdout)
    assert job["status"] == "COMPLETED", log
    admin = sec.server.client()
    [host] = [h for h in admin.list_hosts() if h["name"] == f"certw{tag}"]
    assert host["worker"] == admin.user_by_login(worker_login)["uid"], host
    results = tmp_path / "res"
    run_cli(["results", job["uid"], "-o", str(results)], alice_home)
    assert (results / "stdout.txt").read_text() == "hello from x509\n"
