"""Owns template and native-app signatures: the canonical manifests, Ed25519 keys, signing
and verifying.

Shared by the server (which checks a signature before storing it), the client (which
signs) and the worker (which refuses to boot or run what no trusted key signed). A
manifest is JSON with sorted keys and no spaces, so the three compute the same bytes; an
app's manifest has a ``type`` a template's lacks, so a signature never passes for the other.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from xwvm.errors import BadRequest, XwvmError

SIGNED_ARTIFACT_FIELDS = ("role", "format", "size", "sha256")
SIGNED_BINARY_FIELDS = ("os", "arch", "sha256", "size")
APP_MANIFEST_TYPE = "xwvm-app/1"
PRIVATE_KEY_FILE = "template-signing-key.pem"
PUBLIC_KEY_FILE = "template-signing-key.pub.pem"


class SigningError(BadRequest):
    """A key or signature that cannot be used (a user mistake, answered 400)."""

    code = "bad_key"


def canonical_manifest(t: Mapping[str, Any]) -> str:
    """The signed text of a template (a view, a worker's description or a push's fields)."""
    artifacts = sorted(({k: a[k] for k in SIGNED_ARTIFACT_FIELDS} for a in t["artifacts"]),
                       key=lambda a: (a["role"], a["format"], a["sha256"]))
    doc = {"name": t["name"], "version": t["version"], "os": t["os"], "arch": t["arch"],
           "artifacts": artifacts, "cmdline": t.get("cmdline") or "",
           "shared_apps": sorted(t.get("shared_apps") or [])}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def canonical_app_manifest(app: Mapping[str, Any]) -> str:
    """The signed text of a native app: its uid, name and kind, and per os/arch the
    binary's sha256 and size (from a view, a worker's job description or local files)."""
    binaries = sorted(({k: b[k] for k in SIGNED_BINARY_FIELDS} for b in app["binaries"]),
                      key=lambda b: (b["os"], b["arch"]))
    doc = {"type": APP_MANIFEST_TYPE, "uid": app["uid"], "name": app["name"],
           "kind": app["kind"], "binaries": binaries}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    """The first 16 hex digits of the sha256 of the raw 32-byte public key."""
    return hashlib.sha256(raw_public(key)).hexdigest()[:16]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeError):
        raise SigningError(f"{what} is not valid base64") from None


def public_from_b64(text: str) -> Ed25519PublicKey:
    raw = unb64(text, "public key")
    if len(raw) != 32:
        raise SigningError(f"an Ed25519 public key has 32 bytes, this one {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def generate(out_dir: Path) -> tuple[Path, Path, str]:
    """Write a new key pair (private key 0600) into ``out_dir``; refuse to overwrite."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    priv_path, pub_path = out_dir / PRIVATE_KEY_FILE, out_dir / PUBLIC_KEY_FILE
    for path in (priv_path, pub_path):
        if path.exists():
            raise SigningError(f"{path} exists; move it away or choose another directory",
                            code="key_exists")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    pub_path.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv_path, pub_path, key_id(key.public_key())


def load_private(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except ValueError as e:
        raise SigningError(f"{path}: not an unencrypted PEM private key ({e})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"{path}: not an Ed25519 private key")
    return key


def load_public(path: Path) -> Ed25519PublicKey:
    """A PEM public key, or (convenience) a PEM private key's public half."""
    data = Path(path).read_bytes()
    try:
        key: Any = serialization.load_pem_public_key(data)
    except ValueError:
        try:
            key = serialization.load_pem_private_key(data, password=None).public_key()
        except (ValueError, TypeError):
            raise SigningError(f"{path}: not a PEM Ed25519 public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningError(f"{path}: not an Ed25519 public key")
    return key


def load_trusted(paths: Iterable[Path]) -> dict[str, Ed25519PublicKey]:
    """Public keys by key id, from files and from the ``*.pem`` files of directories."""
    keys: dict[str, Ed25519PublicKey] = {}
    for path in map(Path, paths):
        files = sorted(path.glob("*.pem")) if path.is_dir() else [path]
        for f in files:
            key = load_public(f)
            keys[key_id(key)] = key
    return keys


@dataclass(frozen=True)
class Signature:
    key_id: str
    public_key: str  # base64 raw
    signature: str  # base64

    def to_dict(self) -> dict[str, str]:
        return {"key_id": self.key_id, "public_key": self.public_key,
                "signature": self.signature}


def sign(manifest: str, key: Ed25519PrivateKey) -> Signature:
    pub = key.public_key()
    return Signature(key_id=key_id(pub), public_key=b64(raw_public(pub)),
                     signature=b64(key.sign(manifest.encode("utf-8"))))


def valid(manifest: str, public: Ed25519PublicKey, signature_b64: str) -> bool:
    try:
        public.verify(unb64(signature_b64, "signature"), manifest.encode("utf-8"))
    except (InvalidSignature, SigningError):
        return False
    return True


class Unverified(XwvmError):
    """What a worker refuses: ``code`` says why (unsigned, untrusted_signature,
    bad_signature); the message is a sentence's end, to follow the object's name."""

    status, code = 422, "unverified"


def trusted_signer(manifest: str, signatures: Iterable[Mapping[str, Any]],
                   trusted: Mapping[str, Ed25519PublicKey]) -> str:
    """The id of a trusted key whose signature verifies over ``manifest``, else raise
    :class:`Unverified` saying why (a signature by an untrusted key counts for nothing)."""
    signatures = [s for s in signatures if isinstance(s, Mapping)]
    if not signatures:
        raise Unverified("is unsigned", code="unsigned")
    bad = []
    for sig in signatures:
        kid = str(sig.get("key_id", ""))
        key = trusted.get(kid)
        if key is None:
            continue
        if valid(manifest, key, str(sig.get("signature", ""))):
            return kid
        bad.append(kid)
    if bad:
        raise Unverified(f"has a signature by trusted key {', '.join(bad)} that does not "
                         "verify (it or its signature was altered)", code="bad_signature")
    signers = ", ".join(sorted(str(s.get("key_id", "?"))[:16] for s in signatures))
    raise Unverified(f"is signed only by keys this worker does not trust ({signers}; "
                     f"trusted: {', '.join(sorted(trusted)) or 'none'})",
                     code="untrusted_signature")
