"""OpenID Connect login against a real provider on loopback (authlib's server side):
authorization code + PKCE through the CLI's loopback redirect, users mapped on first
login at standard level, and ID tokens or states an attacker could bring, refused."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tests.security.conftest import SecurityServer
from tests.support.processes import XWVM, run_cli
from xwvm.client.sdk import ApiError, Client


def _client(sec: SecurityServer) -> Client:
    return Client(sec.server.url, sec.server.ca)


def _authorize(sec: SecurityServer, c: Client) -> tuple[str, str, str]:
    """Play the browser: start, follow the provider's consent, read code and state from
    the loopback redirect (not delivered: the test is the client here)."""
    verifier = secrets.token_urlsafe(64)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()) \
        .rstrip(b"=").decode()
    start = c.oidc_start("http://127.0.0.1:9/callback", challenge)
    resp = requests.get(start["authorization_url"], allow_redirects=False, timeout=30)
    assert resp.status_code == 302, resp.text
    query = parse_qs(urlsplit(resp.headers["Location"]).query)
    assert query["state"] == [start["state"]]
    return start["state"], query["code"][0], verifier


@pytest.fixture
def provider_user(sec: SecurityServer) -> Iterator[str]:
    name = f"oidc{secrets.token_hex(4)}"
    sec.oidc.user, sec.oidc.mode = name, "normal"
    yield name
    sec.oidc.mode = "normal"


def _refused(sec: SecurityServer, code: str, *words: str) -> None:
    c = _client(sec)
    state, auth_code, verifier = _authorize(sec, c)
    with pytest.raises(ApiError) as e:
        c.oidc_finish(state, auth_code, verifier)
    assert (e.value.status, e.value.code) == (401, code), e.value
    for word in words:
        assert word in e.value.message


def test_cli_logs_in_through_the_loopback_redirect(sec: SecurityServer, provider_user: str,
                                                   tmp_path: Path) -> None:
    env = {**os.environ, "XWVM_CONFIG_DIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([*XWVM, "login", "--server", sec.server.url, "--ca",
                             str(sec.server.ca), "--oidc", "--no-browser",
                             "--oidc-timeout", "60"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stderr is not None
        url = ""
        deadline = time.time() + 60
        while not url.startswith(sec.oidc.issuer) and time.time() < deadline:
            url = proc.stderr.readline().strip()
        assert url.startswith(f"{sec.oidc.issuer}/authorize?"), url
        consent = requests.get(url, allow_redirects=False, timeout=30)
        back = requests.get(consent.headers["Location"], timeout=30)  # to the CLI
        assert back.status_code == 200
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert f"logged in as {provider_user} (standard)" in out
    assert provider_user in run_cli(["whoami"], tmp_path).stdout


def test_same_subject_is_the_same_user_and_never_a_local_one(sec: SecurityServer) -> None:
    sec.oidc.user = "admin"  # the provider's "admin" is not the xwvm admin
    c = _client(sec)
    first = c.oidc_finish(*_authorize(sec, c))["user"]
    assert first["login"] != "admin" and first["rights"] == "standard"
    again = c.oidc_finish(*_authorize(sec, c))["user"]
    assert again["uid"] == first["uid"]


def test_wrong_audience_is_refused(sec: SecurityServer, provider_user: str) -> None:
    sec.oidc.mode = "wrong_audience"
    _refused(sec, "oidc_wrong_audience", "another-client")


def test_bad_signature_is_refused(sec: SecurityServer, provider_user: str) -> None:
    sec.oidc.mode = "bad_signature"
    _refused(sec, "oidc_bad_signature", "signature")


def test_replayed_state_is_refused(sec: SecurityServer, provider_user: str) -> None:
    c = _client(sec)
    state, code, verifier = _authorize(sec, c)
    assert c.oidc_finish(state, code, verifier)["user"]["login"] == provider_user
    with pytest.raises(ApiError) as e:
        c.oidc_finish(state, code, verifier)
    assert (e.value.status, e.value.code) == (401, "challenge_replayed")


def test_code_without_the_pkce_verifier_is_refused(sec: SecurityServer,
                                                   provider_user: str) -> None:
    c = _client(sec)
    state, code, _ = _authorize(sec, c)  # an intercepted code, without the verifier
    with pytest.raises(ApiError) as e:
        c.oidc_finish(state, code, secrets.token_urlsafe(64))
    assert e.value.code == "oidc_pkce_mismatch"
