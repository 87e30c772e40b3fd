"""The outside CAs' revocation lists as the server reads them: the configured CRL files,
each checked against the trusted CA that signed it, re-read whenever a file on disk
changes (so an updated CRL applies at once, to logins and to open sessions alike)."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

from cryptography import x509

from xwvm.errors import BadRequest
from xwvm.server.config import ServerConfig

# (issuer DN as RFC 4514, serial) -> revocation date
Revoked = dict[tuple[str, int], dt.datetime]

_lock = threading.Lock()
_cache: dict[str, tuple[tuple[object, ...], Revoked]] = {}


def crl_paths(cfg: ServerConfig) -> list[Path]:
    return [Path(n) for n in filter(None, (n.strip() for n in cfg.trusted_crl_files.split(",")))]


def load_crl(path: Path) -> x509.CertificateRevocationList:
    data = path.read_bytes()
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError as e:
        raise BadRequest(f"CRL file {path}: {e}", code="bad_config") from None


def _load_cas(path: Path) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError) as e:
        raise BadRequest(f"trusted CA file {path}: {e}", code="bad_config") from None


def _stamp(paths: list[Path]) -> tuple[object, ...]:
    """What changes when any of the files is rewritten."""
    out: list[object] = []
    for p in paths:
        try:
            st = p.stat()
            out.append((str(p), st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append((str(p), None))
    return tuple(out)


def _read(cfg: ServerConfig) -> Revoked:
    cas = _load_cas(Path(cfg.trusted_ca_file)) if cfg.trusted_ca_file else []
    revoked: Revoked = {}
    for path in crl_paths(cfg):
        crl = load_crl(path)
        signer = next((ca for ca in cas if ca.subject == crl.issuer
                       and crl.is_signature_valid(ca.public_key())), None)
        if signer is None:
            continue  # a CRL no trusted CA signed revokes nothing
        issuer = signer.subject.rfc4514_string()
        for entry in crl:
            revoked[(issuer, entry.serial_number)] = entry.revocation_date_utc
    return revoked


def revoked(cfg: ServerConfig) -> Revoked:
    """Every serial the configured CRLs revoke, by issuer; cached until a file changes."""
    paths = [*([Path(cfg.trusted_ca_file)] if cfg.trusted_ca_file else []), *crl_paths(cfg)]
    if not paths:
        return {}
    key = str(cfg.data_dir)
    stamp = _stamp(paths)
    with _lock:
        hit = _cache.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
    found = _read(cfg)
    with _lock:
        _cache[key] = (stamp, found)
    return found


def revocation(cfg: ServerConfig, issuer: str, serial: int) -> dt.datetime | None:
    """When an outside CA's CRL revoked this certificate (issuer DN, serial), or None."""
    return revoked(cfg).get((issuer, serial))
