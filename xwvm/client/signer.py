"""Proof of key possession for X.509 logins: sign the server's challenge with a PEM key.

Used by `xwvm login --cert/--key` and by workers started with a certificate.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa

from xwvm.errors import XwvmError


def signer(key_path: Path) -> Callable[[bytes], bytes]:
    """A function that signs bytes with the private key in ``key_path`` (unencrypted PEM)."""
    try:
        key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise XwvmError(f"{key_path}: cannot read the private key ({e})",
                        code="bad_key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey |
                      ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        raise XwvmError(f"{key_path}: unsupported key type {type(key).__name__}",
                        code="bad_key")

    def sign(data: bytes) -> bytes:
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key.sign(data, ec.ECDSA(hashes.SHA256()))
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        return key.sign(data)  # type: ignore[union-attr]
    return sign
