"""/auth/oidc/start as an anonymous attacker calls it: each call used to fetch the
provider's discovery document and leave a database row. Now the document is cached, the
calls are counted per address, and the unfinished logins kept at once are capped."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import secrets
import sqlite3
import ssl
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.oidc_provider import Provider
from tests.support.processes import ServerProcess

PER_ADDRESS = 4
MAX_PENDING = 10


class Started:
    def __init__(self, srv: ServerProcess, provider: Provider, discoveries: list[str]) -> None:
        self.srv, self.provider, self.discoveries = srv, provider, discoveries


@pytest.fixture(scope="module")
def oidc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Started]:
    provider = Provider()
    discoveries: list[str] = []
    inner = provider.app.wsgi_app

    def counting(environ: dict[str, Any], start_response: Any) -> Any:
        if environ["PATH_INFO"].endswith("/openid-configuration"):
            discoveries.append(environ["PATH_INFO"])
        return inner(environ, start_response)

    provider.app.wsgi_app = counting  # type: ignore[method-assign]
    provider.start()
    srv = ServerProcess(tmp_path_factory.mktemp("oidc-start"), workers=2, env={
        "XWVM_OIDC_ISSUER": provider.issuer, "XWVM_OIDC_CLIENT_ID": provider.client.client_id,
        "XWVM_OIDC_CLIENT_SECRET": provider.client.client_secret,
        "XWVM_OIDC_STARTS_PER_ADDRESS": str(PER_ADDRESS),
        "XWVM_OIDC_MAX_PENDING": str(MAX_PENDING), "XWVM_LOGIN_WINDOW_S": "120"}).init().start()
    yield Started(srv, provider, discoveries)
    srv.stop()
    provider.stop()


def _start(srv: ServerProcess, source: str) -> tuple[int, dict[str, Any], str | None]:
    verifier = secrets.token_urlsafe(64)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()) \
        .rstrip(b"=").decode()
    ctx = ssl.create_default_context(cafile=str(srv.ca))
    conn = http.client.HTTPSConnection("127.0.0.1", srv.port, context=ctx, timeout=30,
                                       source_address=(source, 0))
    try:
        conn.request("POST", "/api/v1/auth/oidc/start", headers={
            "Content-Type": "application/json"}, body=json.dumps(
            {"redirect_uri": "http://127.0.0.1:9/callback", "code_challenge": challenge}))
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read()), resp.getheader("Retry-After")
    finally:
        conn.close()


def _states(srv: ServerProcess) -> int:
    with sqlite3.connect(srv.data_dir / "xwvm.db") as db:
        return db.execute("SELECT count(*) FROM auth_nonces WHERE kind = 'oidc'").fetchone()[0]


def test_starts_are_throttled_per_address_and_fetch_discovery_once(oidc: Started) -> None:
    codes = [_start(oidc.srv, "127.0.0.51")[0] for _ in range(PER_ADDRESS + 3)]
    assert codes == [200] * PER_ADDRESS + [429] * 3, codes
    status, body, retry = _start(oidc.srv, "127.0.0.51")
    assert (status, body["error"]) == (429, "too_many_attempts") and retry, body
    # one fetch per server worker process at most, not one per call
    assert 1 <= len(oidc.discoveries) <= 2, oidc.discoveries


def test_unfinished_logins_kept_at_once_are_capped(oidc: Started) -> None:
    answers = [_start(oidc.srv, f"127.0.2.{i}") for i in range(1, MAX_PENDING + 5)]
    refused = [b for s, b, _ in answers if s != 200]
    assert refused and all(b["error"] == "too_many_pending" for b in refused), answers
    assert _states(oidc.srv) <= MAX_PENDING
