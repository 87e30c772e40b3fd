"""Two server processes on one PostgreSQL database share the login counters and the
single-use challenges: throttling and replay protection hold across servers."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.security.conftest import Authority
from tests.support.postgres import PostgresServer
from tests.support.processes import ServerProcess


def _post(srv: ServerProcess, path: str, body: dict[str, str]) -> requests.Response:
    return requests.post(f"{srv.url}/api/v1{path}", json=body, verify=str(srv.ca), timeout=30)


@pytest.mark.postgres
def test_two_servers_share_throttling_and_challenges(postgres: PostgresServer,
                                                     tmp_path: Path) -> None:
    url = postgres.create_database(f"sec_{uuid.uuid4().hex[:8]}")
    first = ServerProcess(tmp_path, db_url=url, workers=1,
                          env={"XWVM_LOGIN_MAX_FAILURES": "4"}).init().start()
    second = first.sibling("server-b").start()
    try:
        admin = first.client()
        for i in range(4):  # the guesses alternate between the servers
            srv = first if i % 2 else second
            assert _post(srv, "/auth/login", {"login": "admin", "password": "guess"}) \
                .status_code == 401
        for srv in (first, second):
            resp = _post(srv, "/auth/login", {"login": "admin", "password": "guess"})
            assert resp.status_code == 429, resp.text

        d = first.data_dir
        ca = Authority.load(d / "ca.pem", d / "ca-key.pem")
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "admin")]))
               .sign(key, hashes.SHA256()))
        pem = admin.issue_cert("admin", csr.public_bytes(serialization.Encoding.PEM))[
            "certificate"]
        assert x509.load_pem_x509_certificate(pem.encode()).issuer == ca.cert.subject
        challenge = _post(first, "/auth/x509/challenge", {"certificate": pem}).json()
        body = {"certificate": pem, "nonce": challenge["nonce"], "signature": base64.b64encode(
            key.sign(challenge["to_sign"].encode(), ec.ECDSA(hashes.SHA256()))).decode()}
        assert _post(second, "/auth/x509/login", body).status_code == 200
        again = _post(first, "/auth/x509/login", body)
        assert (again.status_code, again.json()["error"]) == (401, "challenge_replayed")
    finally:
        second.stop()
        first.stop()
