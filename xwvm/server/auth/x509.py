"""X.509 authentication: client certificates issued by the server CA, certificates of
trusted outside CAs (grid CAs), and login by proof of key possession over a signed,
single-use challenge.

Certificates of the server CA map to the user they were issued for (by serial, recorded
at issue; revoking one lists it in the CA's CRL). Certificates of an outside CA map by
(issuer DN, subject DN) to an identity: a name belongs to the CA that first signed it
here, unless the admin's signing policy (``trusted_ca_policy_file``) says which names each
CA may sign. An unknown subject becomes a new standard user on its first login (as OIDC
users do), never an existing local account of the same name. A session records the
certificate it was opened with, so revoking the certificate ends it.
"""

from __future__ import annotations

import base64
import datetime as dt
import fnmatch
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy import select
from sqlalchemy.orm import Session

from xwvm.errors import BadRequest, NotFound, Unauthorized
from xwvm.server import events, policy
from xwvm.server.auth import crls, outside, tokens
from xwvm.server.config import ServerConfig
from xwvm.server.db.models import AuthNonce, ClientCert, Identity, User, utcnow
from xwvm.server.policy import Principal
from xwvm.server.services import users as user_service

PROVIDER = "x509"
UNKNOWN_ISSUER = "?"  # identities made before issuers were recorded (migration 0009)


def _refuse(message: str, code: str) -> Unauthorized:
    return Unauthorized(message, code=code)


def _fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def serial_hex(serial: int) -> str:
    return format(serial, "x")


def load_certificate(pem: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem.encode())
    except ValueError:
        raise BadRequest("the certificate is not a PEM X.509 certificate",
                         code="bad_certificate") from None


# --- trust anchors and revocation lists ---------------------------------------------------

@dataclass(frozen=True)
class Anchor:
    cert: x509.Certificate
    own: bool  # the server CA (users by issued serial) or an outside CA (users by DN)


def _load_pem_bundle(path: Path) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError) as e:
        raise BadRequest(f"trusted CA file {path}: {e}", code="bad_config") from None


def anchors(cfg: ServerConfig) -> list[Anchor]:
    found = [Anchor(x509.load_pem_x509_certificate(cfg.ca_cert.read_bytes()), True)]
    if cfg.trusted_ca_file:
        found += [Anchor(c, False) for c in _load_pem_bundle(Path(cfg.trusted_ca_file))]
    return found


def _external_revocation(cfg: ServerConfig, cert: x509.Certificate,
                         issuer: x509.Certificate) -> dt.datetime | None:
    """The revocation date of ``cert`` in a configured CRL of its issuer (re-read when the
    file changes, so that a CRL updated on disk applies at once), or None."""
    return crls.revocation(cfg, issuer.subject.rfc4514_string(), cert.serial_number)


# --- which names an outside CA may sign ------------------------------------------------------

_SLASH_NAMES = {"1.2.840.113549.1.9.1": "emailAddress"}


def slash_dn(name: x509.Name) -> str:
    """OpenSSL's one-line form, /O=grid/CN=alice, as grid signing policies write DNs."""
    return "".join("/" + "+".join(f"{_slash_attr(a)}={a.value}" for a in rdn)
                   for rdn in name.rdns)


def _slash_attr(attr: x509.NameAttribute) -> str:
    short = attr.rfc4514_attribute_name
    return _SLASH_NAMES.get(short, short)


def _dn_matches(pattern: str, name: x509.Name) -> bool:
    """A DN or glob, written /A=b/C=d or as RFC 4514, against ``name`` (the whole of it)."""
    text = slash_dn(name) if pattern.startswith("/") else name.rfc4514_string()
    return fnmatch.fnmatchcase(text, pattern)


@dataclass(frozen=True)
class SigningPolicy:
    """The admin's word on which subject names each outside CA may sign, like an EGI
    signing_policy file: YAML, a list of ``{ca: DN, subjects: [DN glob, ...]}``."""

    rules: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @classmethod
    def load(cls, path: Path | None) -> SigningPolicy:
        if path is None:
            return cls()
        try:
            raw = yaml.safe_load(Path(path).read_text()) or []
        except (OSError, yaml.YAMLError) as e:
            raise BadRequest(f"signing policy file {path}: {e}", code="bad_config") from None
        if not isinstance(raw, list) or not all(_policy_entry_ok(e) for e in raw):
            raise BadRequest(f"signing policy file {path}: expected a list of "
                             "{ca: DN, subjects: [DN pattern, ...]}", code="bad_config")
        return cls(tuple((e["ca"], tuple(e["subjects"])) for e in raw))

    def allows(self, ca: x509.Certificate, subject: x509.Name) -> bool | None:
        """True or False when a rule names this CA; None when none does."""
        mine = [ps for dn, ps in self.rules if _dn_matches(dn, ca.subject)]
        if not mine:
            return None
        return any(_dn_matches(p, subject) for ps in mine for p in ps)


def _policy_entry_ok(entry: object) -> bool:
    return (isinstance(entry, dict) and isinstance(entry.get("ca"), str)
            and isinstance(entry.get("subjects"), list)
            and all(isinstance(p, str) for p in entry["subjects"]))


# --- validation -----------------------------------------------------------------------------

def _check_period(cert: x509.Certificate, what: str, now: dt.datetime) -> None:
    if now < cert.not_valid_before_utc:
        raise _refuse(f"{what} is not valid yet (valid from "
                      f"{cert.not_valid_before_utc.isoformat()})", "cert_not_yet_valid")
    if now > cert.not_valid_after_utc:
        raise _refuse(f"{what} expired on {cert.not_valid_after_utc.isoformat()}",
                      "cert_expired")


def _ext(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.ExtensionType | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _check_usage(cert: x509.Certificate) -> None:
    basic = _ext(cert, x509.BasicConstraints)
    if isinstance(basic, x509.BasicConstraints) and basic.ca:
        raise _refuse("a CA certificate cannot log in", "bad_key_usage")
    eku = _ext(cert, x509.ExtendedKeyUsage)
    if not isinstance(eku, x509.ExtendedKeyUsage) or \
            ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
        raise _refuse("the certificate is not for client authentication (its extended key "
                      "usage lacks clientAuth)", "bad_key_usage")
    ku = _ext(cert, x509.KeyUsage)
    if isinstance(ku, x509.KeyUsage) and not ku.digital_signature:
        raise _refuse("the certificate's key usage does not allow digital signatures",
                      "bad_key_usage")


def _issuer(cert: x509.Certificate, found: list[Anchor]) -> Anchor:
    for anchor in found:
        if anchor.cert.subject != cert.issuer:
            continue
        try:
            cert.verify_directly_issued_by(anchor.cert)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return anchor
    raise _refuse(f"the certificate's issuer ({cert.issuer.rfc4514_string()}) is not a "
                  "trusted CA", "unknown_ca")


def validate(db: Session, cfg: ServerConfig, cert: x509.Certificate,
             now: dt.datetime | None = None) -> Anchor:
    """Chain, validity period, key usage and revocation; each refusal names its reason."""
    now = now or utcnow()
    anchor = _issuer(cert, anchors(cfg))
    _check_period(anchor.cert, "the issuing CA's certificate", now)
    _check_period(cert, "the certificate", now)
    _check_usage(cert)
    serial = serial_hex(cert.serial_number)
    if anchor.own:
        row = db.get(ClientCert, serial)
        if row is None or row.fingerprint != _fingerprint(cert):
            raise _refuse(f"certificate serial {serial} was not issued by this server",
                          "unknown_certificate")
        if row.revoked_at is not None:
            raise _refuse(f"certificate serial {serial} was revoked on "
                          f"{row.revoked_at.isoformat()}", "cert_revoked")
    else:
        revoked = _external_revocation(cfg, cert, anchor.cert)
        if revoked is not None:
            raise _refuse(f"certificate serial {serial} was revoked on {revoked.isoformat()} "
                          f"(CRL of {anchor.cert.subject.rfc4514_string()})", "cert_revoked")
    return anchor


# --- the challenge ---------------------------------------------------------------------------

def _to_sign(nonce: str, fingerprint: str) -> str:
    return f"xwvm x509 login v1\nnonce={nonce}\ncertificate={fingerprint}\n"


def challenge(db: Session, cfg: ServerConfig, pem: str) -> dict[str, str]:
    """A nonce bound to this certificate, to be signed with its key."""
    cert = load_certificate(pem)
    validate(db, cfg, cert)  # refuse early, with the reason, before any signing
    fp = _fingerprint(cert)
    nonce = outside.new_nonce(db, "x509", {"fingerprint": fp}, cfg.x509_challenge_s)
    expires = utcnow() + dt.timedelta(seconds=cfg.x509_challenge_s)
    return {"nonce": nonce, "expires_at": expires.isoformat(), "to_sign": _to_sign(nonce, fp)}


def verify_signature(cert: x509.Certificate, data: bytes, signature: bytes) -> None:
    key = cert.public_key()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(signature, data)
        else:
            raise _refuse("unsupported certificate key type", "bad_certificate")
    except InvalidSignature:
        raise _refuse("the challenge signature does not match the certificate's key "
                      "(proof of key possession failed)", "bad_signature") from None


def user_for(db: Session, cfg: ServerConfig, cert: x509.Certificate, anchor: Anchor) -> User:
    if anchor.own:
        row = db.get(ClientCert, serial_hex(cert.serial_number))
        user = db.get(User, row.user_uid) if row else None
        if user is None:
            raise _refuse("the certificate's user no longer exists", "unknown_certificate")
        return user
    issuer, subject = anchor.cert.subject.rfc4514_string(), cert.subject.rfc4514_string()
    policy_file = Path(cfg.trusted_ca_policy_file) if cfg.trusted_ca_policy_file else None
    allowed = SigningPolicy.load(policy_file).allows(anchor.cert, cert.subject)
    if allowed is False:
        raise _refuse("the certificate's subject is not among the names the signing policy "
                      "lets its CA sign", "subject_not_allowed")
    if db.get(Identity, (PROVIDER, issuer, subject)) is None:
        _claim_name(db, cfg, issuer, subject, allowed)
    return outside.user_for_identity(db, PROVIDER, subject, _cn(cert) or "x509-user",
                                     issuer=issuer)


def _claim_name(db: Session, cfg: ServerConfig, issuer: str, subject: str,
                allowed: bool | None) -> None:
    """A subject new to this CA: adopt an identity of unknown issuer (made before 0009)
    when this CA may sign the name (by the policy, or as the only outside CA); refuse a
    name another CA holds unless the policy grants it (then it is a distinct user)."""
    others = list(db.scalars(select(Identity).where(Identity.provider == PROVIDER,
                                                    Identity.subject == subject)))
    legacy = next((i for i in others if i.issuer == UNKNOWN_ISSUER), None)
    sole = sum(not a.own for a in anchors(cfg)) == 1
    if legacy is not None and (allowed or sole):
        legacy.issuer = issuer
        db.flush()
        events.record(db, "identity_linked", object_uid=legacy.user_uid,
                      detail=f"{PROVIDER} {subject}: its issuer recorded as {issuer}")
    elif others and not allowed:
        raise _refuse("another CA's certificate holds this subject name here, and the "
                      "signing policy does not let this CA sign it", "subject_not_allowed")


def _cn(cert: x509.Certificate) -> str | None:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


def login(db: Session, cfg: ServerConfig, secret: bytes, pem: str, row: AuthNonce,
          signature_b64: str) -> tuple[str, User, object]:
    """After ``outside.burn_nonce``: the certificate again, and the proof of possession."""
    cert = load_certificate(pem)
    fp = _fingerprint(cert)
    if row.data.get("fingerprint") != fp:
        raise _refuse("this challenge was issued for another certificate", "bad_challenge")
    anchor = validate(db, cfg, cert)
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except ValueError:
        raise BadRequest("the signature is not base64", code="bad_signature") from None
    verify_signature(cert, _to_sign(row.nonce, fp).encode(), signature)
    user = user_for(db, cfg, cert, anchor)
    serial = serial_hex(cert.serial_number)
    # A session never outlives the certificate that opened it.
    left_s = int((cert.not_valid_after_utc - utcnow()).total_seconds())
    token, user, expires = user_service.session_for(db, secret, user, cfg.token_lifetime_s,
                                                    cfg.worker_token_lifetime_s,
                                                    how=f"x509 serial {serial}",
                                                    max_lifetime_s=left_s)
    tokens.bind_certificate(db, token, anchor.cert.subject.rfc4514_string(), serial)
    return token, user, expires


# --- the server CA: issue, revoke, CRL -------------------------------------------------------

def _ca(cfg: ServerConfig) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate(cfg.ca_cert.read_bytes())
    key = serialization.load_pem_private_key(cfg.ca_key.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise BadRequest("the server CA key is of an unsupported type", code="bad_config")
    return cert, key  # type: ignore[return-value]


def issue(db: Session, cfg: ServerConfig, p: Principal, login_name: str,
          csr_pem: str) -> tuple[ClientCert, bytes]:
    """Sign a client certificate (CN = login, clientAuth) for the key in the CSR."""
    policy.require(p, "manage_certs")
    user = db.scalars(select(User).where(User.login == login_name)).first()
    if user is None:
        raise NotFound("no user with that login", code="unknown_user")
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
    except ValueError:
        raise BadRequest("the CSR is not a PEM certificate request", code="bad_csr") from None
    if not csr.is_signature_valid:
        raise BadRequest("the CSR's signature is not valid", code="bad_csr")
    ca, ca_key = _ca(cfg)
    now = utcnow()
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "xwvm"),
                         x509.NameAttribute(NameOID.COMMON_NAME, user.login)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca.subject)
            .public_key(csr.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(min(now + dt.timedelta(days=cfg.client_cert_days),
                                 ca.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    row = ClientCert(serial=serial_hex(cert.serial_number), user_uid=user.uid,
                     subject=subject.rfc4514_string(), fingerprint=_fingerprint(cert),
                     issued_at=now, not_after=cert.not_valid_after_utc)
    db.add(row)
    events.record(db, "cert_issued", object_uid=user.uid, actor_uid=p.uid,
                  detail=f"serial {row.serial} for {user.login}")
    return row, cert.public_bytes(serialization.Encoding.PEM)


def list_certs(db: Session, p: Principal) -> list[ClientCert]:
    policy.require(p, "manage_certs")
    return list(db.scalars(select(ClientCert).order_by(ClientCert.issued_at)))


def revoke(db: Session, cfg: ServerConfig, p: Principal, serial: str) -> ClientCert:
    policy.require(p, "manage_certs")
    row = db.get(ClientCert, serial.lower().replace(":", "").lstrip("0") or "0")
    if row is None:
        raise NotFound(f"no certificate with serial {serial} was issued by this server",
                       code="unknown_certificate")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        events.record(db, "cert_revoked", object_uid=row.user_uid, actor_uid=p.uid,
                      detail=f"serial {row.serial}")
    # Also on a repeated revoke: sessions the certificate opened end with it.
    ca = x509.load_pem_x509_certificate(cfg.ca_cert.read_bytes())
    tokens.revoke_certificate(db, ca.subject.rfc4514_string(), row.serial)
    return row


def crl_pem(db: Session, cfg: ServerConfig) -> bytes:
    """The server CA's CRL: every certificate it issued and an admin revoked."""
    ca, ca_key = _ca(cfg)
    now = utcnow()
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca.subject)
               .last_update(now).next_update(now + dt.timedelta(days=1)))
    for row in db.scalars(select(ClientCert).where(ClientCert.revoked_at.is_not(None))):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(int(row.serial, 16))
            .revocation_date(row.revoked_at).build())
    return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
