"""Security fixtures: one real server for the package, with short login windows, an
outside "grid" CA it trusts (with a CRL file the tests rewrite), a real OpenID provider on
loopback as its issuer, and certificate makers."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.oidc_provider import Provider
from tests.support.processes import ServerProcess

LOGIN_WINDOW_S = 3
LOGIN_MAX_FAILURES = 3
LOGIN_MAX_FAILURES_PER_ADDRESS = 8


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class Authority:
    """A CA made in the test: issues client certificates as the test asks."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, name: str) -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now() - dt.timedelta(days=1))
                .not_valid_after(now() + dt.timedelta(days=30))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .sign(key, hashes.SHA256()))
        return cls(cert, key)

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> Authority:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cls(x509.load_pem_x509_certificate(cert_path.read_bytes()), key)

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, cn: str, *, key: ec.EllipticCurvePrivateKey | None = None,
              start: dt.timedelta = dt.timedelta(hours=-1),
              end: dt.timedelta = dt.timedelta(days=1),
              eku: list[x509.ObjectIdentifier] | None = None,
              org: str = "grid") -> tuple[bytes, ec.EllipticCurvePrivateKey, int]:
        """A client certificate (PEM), its key and serial; ``start``/``end`` from now."""
        key = key or ec.generate_private_key(ec.SECP256R1())
        serial = x509.random_serial_number()
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH] if eku is None else eku
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                                         x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
                .issuer_name(self.cert.subject).public_key(key.public_key())
                .serial_number(serial)
                .not_valid_before(now() + start).not_valid_after(now() + end)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                               critical=True)
                .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
                .sign(self.key, hashes.SHA256()))
        return cert.public_bytes(serialization.Encoding.PEM), key, serial

    def write_crl(self, path: Path, serials: list[int]) -> None:
        builder = (x509.CertificateRevocationListBuilder().issuer_name(self.cert.subject)
                   .last_update(now()).next_update(now() + dt.timedelta(days=1)))
        for s in serials:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(s)
                .revocation_date(now()).build())
        path.write_bytes(builder.sign(self.key, hashes.SHA256())
                         .public_bytes(serialization.Encoding.PEM))


@dataclass
class SecurityServer:
    server: ServerProcess
    grid: Authority
    grid_crl: Path
    oidc: Provider


@pytest.fixture(scope="package")
def sec(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecurityServer]:
    root = tmp_path_factory.mktemp("sec")
    grid = Authority.create("Test Grid CA")
    (root / "grid-ca.pem").write_bytes(grid.pem)
    crl = root / "grid.crl"
    grid.write_crl(crl, [])
    oidc = Provider().start()
    srv = ServerProcess(root, env={
        "XWVM_OIDC_ISSUER": oidc.issuer,
        "XWVM_OIDC_CLIENT_ID": oidc.client.client_id,
        "XWVM_OIDC_CLIENT_SECRET": oidc.client.client_secret,
        "XWVM_LOGIN_WINDOW_S": str(LOGIN_WINDOW_S),
        "XWVM_LOGIN_MAX_FAILURES": str(LOGIN_MAX_FAILURES),
        "XWVM_LOGIN_MAX_FAILURES_PER_ADDRESS": str(LOGIN_MAX_FAILURES_PER_ADDRESS),
        "XWVM_TRUSTED_CA_FILE": str(root / "grid-ca.pem"),
        "XWVM_TRUSTED_CRL_FILES": str(crl)}).init().start()
    yield SecurityServer(srv, grid, crl, oidc)
    srv.stop()
    oidc.stop()
