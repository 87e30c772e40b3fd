"""Outside CAs against each other: a server that trusts three grid CAs, two of which sign
the same subject DN, and one restricted by the admin's signing policy to the names
/O=grid/CN=alice*. A CA may never log in as a user another CA's certificate mapped."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from tests.security.conftest import Authority
from tests.support.processes import ServerProcess
from xwvm.client.sdk import ApiError, Client


@dataclass
class Grid:
    server: ServerProcess
    one: Authority
    two: Authority
    alice_ca: Authority


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Grid]:
    root = tmp_path_factory.mktemp("issuers")
    one, two = Authority.create("Grid CA One"), Authority.create("Grid CA Two")
    alice_ca = Authority.create("Alice Only CA")
    (root / "cas.pem").write_bytes(one.pem + two.pem + alice_ca.pem)
    (root / "signing-policy.yaml").write_text(
        "# which subject names each outside CA may sign (like an EGI signing_policy)\n"
        "- ca: /CN=Alice Only CA\n"
        "  subjects: ['/O=grid/CN=alice*']\n")
    srv = ServerProcess(root, env={
        "XWVM_TRUSTED_CA_FILE": str(root / "cas.pem"),
        "XWVM_TRUSTED_CA_POLICY_FILE": str(root / "signing-policy.yaml")}).init().start()
    yield Grid(srv, one, two, alice_ca)
    srv.stop()


def _sign(key: ec.EllipticCurvePrivateKey) -> Callable[[bytes], bytes]:
    return lambda data: key.sign(data, ec.ECDSA(hashes.SHA256()))


def _login(grid: Grid, ca: Authority, cn: str) -> dict[str, object]:
    pem, key, _ = ca.issue(cn)
    return Client(grid.server.url, grid.server.ca).x509_login(pem, _sign(key))["user"]


def _refused(grid: Grid, ca: Authority, cn: str) -> ApiError:
    with pytest.raises(ApiError) as e:
        _login(grid, ca, cn)
    assert (e.value.status, e.value.code) == (401, "subject_not_allowed"), e.value
    assert cn not in e.value.message  # the refusal does not echo the submitted name
    return e.value


def test_second_ca_with_the_same_dn_does_not_log_into_the_first_cas_user(grid: Grid) -> None:
    carol = _login(grid, grid.one, "Carol Grid")
    assert _login(grid, grid.one, "Carol Grid")["uid"] == carol["uid"]  # new key, same user
    _refused(grid, grid.two, "Carol Grid")
    # and the other way round: a name first mapped under CA two is CA two's
    dave = _login(grid, grid.two, "Dave Grid")
    _refused(grid, grid.one, "Dave Grid")
    assert _login(grid, grid.two, "Dave Grid")["uid"] == dave["uid"]


def test_ca_restricted_by_the_signing_policy_signs_only_its_names(grid: Grid) -> None:
    alice = _login(grid, grid.alice_ca, "alice-smith")
    assert alice["rights"] == "standard"
    _refused(grid, grid.alice_ca, "bob")
    _refused(grid, grid.alice_ca, "malice")  # the pattern is anchored


def test_policy_file_names_a_ca_by_rfc4514_too(tmp_path: Path) -> None:
    """The signing policy's CA and subjects may be written as OpenSSL's /A=b/C=d or as
    RFC 4514; both name the same CA (checked on the parser, no server needed)."""
    from xwvm.server.auth.x509 import SigningPolicy
    ca = Authority.create("Alice Only CA")
    policy_file = tmp_path / "p.yaml"
    policy_file.write_text("- ca: CN=Alice Only CA\n  subjects: ['/O=grid/CN=alice*']\n")
    rules = SigningPolicy.load(policy_file)
    pem, _key, _ = ca.issue("alice-2")
    from cryptography import x509
    cert = x509.load_pem_x509_certificate(pem)
    assert rules.allows(ca.cert, cert.subject) is True
    pem, _key, _ = ca.issue("bob")
    assert rules.allows(ca.cert, x509.load_pem_x509_certificate(pem).subject) is False
    assert rules.allows(Authority.create("Other CA").cert, cert.subject) is None
