"""The tests' app-signing key: native apps sent by tests are signed with it, and the
workers that tests start trust it (workers refuse unsigned native apps, issue 13 hole 3).

One fixed key pair, written once per test process as the files ``xwvm admin keygen``
makes; it signs only test apps, so it need not be secret.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from xwvm import signing
from xwvm.client.sdk import Client

_SEED = bytes(range(32))


@functools.cache
def _key_dir() -> Path:
    out = Path(tempfile.mkdtemp(prefix="xwvm-test-appkey-"))
    key = Ed25519PrivateKey.from_private_bytes(_SEED)
    (out / signing.PRIVATE_KEY_FILE).write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (out / signing.PRIVATE_KEY_FILE).chmod(0o600)
    (out / signing.PUBLIC_KEY_FILE).write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return out


def private_key() -> Path:
    return _key_dir() / signing.PRIVATE_KEY_FILE


def public_key() -> Path:
    return _key_dir() / signing.PUBLIC_KEY_FILE


def sign(client: Client, app: dict[str, Any]) -> dict[str, Any]:
    """Sign ``app`` (a view from the server) as ``xwvm app sign`` does; the signed view."""
    manifest = signing.canonical_app_manifest({**app, "binaries": app["signed_binaries"]})
    assert manifest == app["manifest"], "the server's manifest differs from its fields"
    sig = signing.sign(manifest, signing.load_private(private_key()))
    return client.sign_app(app["uid"], sig.public_key, sig.signature)


def create_signed_app(client: Client, name: str, binaries: dict[str, str]) -> dict[str, Any]:
    return sign(client, client.create_app(name, binaries))
