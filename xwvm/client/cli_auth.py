"""Authentication commands: `xwvm login` (password or certificate; pinning the server CA by
its fingerprint on a first login), `xwvm user passwd|disable|enable`, and
`xwvm admin issue-cert|revoke-cert|certs`."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import ssl
import time
import warnings
import webbrowser
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import click
import requests
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from xwvm.client.cli_common import (
    client,
    fail,
    format_option,
    handle_errors,
    output,
    read_secret,
)
from xwvm.client.cli_template_store import admin_group
from xwvm.client.sdk import Client
from xwvm.client.session import Session, config_dir
from xwvm.client.signer import signer
from xwvm.protocol.paths import API_PREFIX

CERT_COLUMNS = ("serial", "subject", "issued_at", "not_after", "revoked_at")


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)  # an existing file keeps its mode through O_CREAT


# --- the server's CA: pinned by its fingerprint, never trusted on first use silently ----------

def fingerprint(cert: x509.Certificate) -> str:
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def _norm(fp: str) -> str:
    fp = fp.strip().upper()
    fp = fp.removeprefix("SHA256:").removeprefix("SHA-256:")
    return fp.replace(":", "").replace(" ", "")


def pin_ca(url: str, expected: str | None) -> Path:
    """Fetch the certificate the server presents and the CA it claims (neither verified
    yet), show their fingerprints, and save the CA only if its fingerprint is ``expected``
    and it signed the server's certificate. Returns the saved CA file."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        fail(f"{url}: the server URL must be https://HOST:PORT")
    host, port = parts.hostname, parts.port or 443
    try:
        leaf = x509.load_pem_x509_certificate(
            ssl.get_server_certificate((host, port), timeout=30).encode())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # unverified on purpose: checked below
            resp = requests.get(f"{url.rstrip('/')}{API_PREFIX}/ca", verify=False, timeout=30)
        resp.raise_for_status()
        ca = x509.load_pem_x509_certificate(resp.content)
    except (OSError, ValueError, requests.RequestException) as e:
        fail(f"cannot read the certificates of {url}: {e}")
        raise  # unreachable: fail raises
    click.echo(f"server certificate SHA-256: {fingerprint(leaf)}", err=True)
    click.echo(f"server CA ({ca.subject.rfc4514_string()}) SHA-256: {fingerprint(ca)}",
               err=True)
    if not expected:
        fail(f"TLS verification of {url} needs its CA, which is not known yet: refusing to "
             "trust it. Compare the CA fingerprint above with the one the server's admin "
             "gives ('xwvm server init' printed it), then run again with --ca-fingerprint "
             "FINGERPRINT (or give --ca FILE)")
    if _norm(expected) != _norm(fingerprint(ca)):
        fail(f"the server's CA fingerprint is not {expected}: NOT trusting it (the "
             "connection may be intercepted, or the fingerprint is of another server)")
    try:
        leaf.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as e:
        fail(f"the server's certificate was not issued by its CA: NOT trusting it ({e!r})")
    path = config_dir() / "ca" / f"{host.replace(':', '_')}_{port}.pem"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    click.echo(f"pinned the server CA in {path}", err=True)
    return path


# --- certificate login ----------------------------------------------------------------------

# --- OpenID Connect login: authorization code + PKCE, caught on a loopback redirect ----------

class _Callback(BaseHTTPRequestHandler):
    """Receives the provider's redirect (code and state) once."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        parts = urlsplit(self.path)
        if parts.path != "/callback":
            self.send_error(404)
            return
        self.server.result = {k: v[0] for k, v in parse_qs(parts.query).items()}  # type: ignore[attr-defined]
        body = b"xwvm: login received; you may close this window.\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def oidc_login(c: Client, open_browser: bool, timeout_s: float) -> dict[str, Any]:
    verifier = secrets.token_urlsafe(64)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()) \
        .rstrip(b"=").decode()
    httpd = HTTPServer(("127.0.0.1", 0), _Callback)
    httpd.result = None  # type: ignore[attr-defined]
    httpd.timeout = 1
    try:
        start = c.oidc_start(f"http://127.0.0.1:{httpd.server_port}/callback", challenge)
        click.echo(f"log in at your OpenID provider:\n{start['authorization_url']}", err=True)
        if open_browser:
            webbrowser.open(start["authorization_url"])
        deadline = time.monotonic() + timeout_s
        while httpd.result is None and time.monotonic() < deadline:  # type: ignore[attr-defined]
            httpd.handle_request()
        result: dict[str, str] | None = httpd.result  # type: ignore[attr-defined]
    finally:
        httpd.server_close()
    if result is None:
        fail(f"no answer from the OpenID provider within {timeout_s:.0f} s")
        raise AssertionError("unreachable")
    if "error" in result:
        fail(f"the OpenID provider refused: {result['error']} "
             f"{result.get('error_description', '')}".strip())
    if result.get("state") != start["state"]:
        fail("the redirect's state is not this login's: refused")
    return c.oidc_finish(start["state"], result.get("code", ""), verifier)


@click.command()
@click.option("--server", "url", required=True, help="https://HOST:PORT")
@click.option("--ca", type=click.Path(exists=True, dir_okay=False),
              help="the server's CA certificate")
@click.option("--ca-fingerprint", help="SHA-256 fingerprint of the server's CA: pins the CA "
              "the server presents (a first login without --ca)")
@click.option("--user", "login", help="log in with this login and a password")
@click.option("--password-file", type=click.Path(exists=True, dir_okay=False))
@click.option("--cert", type=click.Path(exists=True, dir_okay=False),
              help="log in with this client certificate (with --key)")
@click.option("--key", type=click.Path(exists=True, dir_okay=False))
@click.option("--oidc", is_flag=True, help="log in through the server's OpenID provider")
@click.option("--no-browser", is_flag=True, help="with --oidc: print the URL, open nothing")
@click.option("--oidc-timeout", type=float, default=300, show_default=True,
              help="seconds to wait for the provider's redirect")
@handle_errors
def login(url: str, ca: str | None, ca_fingerprint: str | None, login: str | None,
          password_file: str | None, cert: str | None, key: str | None, oidc: bool,
          no_browser: bool, oidc_timeout: float) -> None:
    """Log in with a password, a certificate or OpenID Connect; the token is saved for
    later commands."""
    if bool(cert) != bool(key):
        fail("give both --cert and --key")
    if sum((bool(cert), bool(login), oidc)) != 1:
        fail("give one of --user (password), --cert and --key (certificate) or --oidc")
    ca_path = Path(ca).resolve() if ca else pin_ca(url, ca_fingerprint)
    c = Client(url, ca_path)
    if oidc:
        answer = oidc_login(c, not no_browser, oidc_timeout)
    elif cert and key:
        answer = c.x509_login(Path(cert).read_bytes(), signer(Path(key)))
    else:
        assert login is not None
        password = (read_secret(password_file) if password_file
                    else click.prompt("password", hide_input=True))
        answer = c.login(login, password)
    user = answer["user"]
    Session(server=url, ca=str(ca_path), token=answer["token"], login=user["login"],
            expires_at=answer["expires_at"]).save()
    click.echo(f"logged in as {user['login']} ({user['rights']}) until {answer['expires_at']}")


# --- xwvm user passwd|disable|enable --------------------------------------------------------

@click.command("passwd")
@click.option("--old-password-file", type=click.Path(exists=True, dir_okay=False))
@click.option("--new-password-file", type=click.Path(exists=True, dir_okay=False))
@handle_errors
def user_passwd(old_password_file: str | None, new_password_file: str | None) -> None:
    """Change your password (every token of your account is revoked; this one renewed)."""
    old = (read_secret(old_password_file) if old_password_file
           else click.prompt("current password", hide_input=True))
    new = (read_secret(new_password_file) if new_password_file
           else click.prompt("new password", hide_input=True, confirmation_prompt=True))
    session = Session.load()
    answer = session.client().change_password(old, new)
    session.token, session.expires_at = answer["token"], answer["expires_at"]
    session.save()
    click.echo("password changed; other sessions of this account are logged out")


def _set_enabled(login: str, enabled: bool) -> None:
    c = client()
    user = c.set_user_enabled(c.user_by_login(login)["uid"], enabled)
    click.echo(f"{'enabled' if enabled else 'disabled'} user {user['login']}")


@click.command("disable")
@click.argument("login")
@handle_errors
def user_disable(login: str) -> None:
    """Disable an account: its tokens are revoked and it cannot log in."""
    _set_enabled(login, False)


@click.command("enable")
@click.argument("login")
@handle_errors
def user_enable(login: str) -> None:
    _set_enabled(login, True)


USER_COMMANDS = (user_passwd, user_disable, user_enable)


# --- xwvm admin issue-cert|revoke-cert|certs -------------------------------------------------

@admin_group.command("issue-cert")
@click.argument("login")
@click.option("-o", "--output", "out_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path))
@handle_errors
def admin_issue_cert(login: str, out_dir: Path) -> None:
    """Have the server CA certify a key made here for LOGIN: OUT_DIR/cert.pem, key.pem (0600)
    and ca.pem. Super users only."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, login)]))
           .sign(key, hashes.SHA256()))
    answer = client().issue_cert(login, csr.public_bytes(serialization.Encoding.PEM))
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_private(out_dir / "key.pem", key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (out_dir / "cert.pem").write_text(answer["certificate"])
    (out_dir / "ca.pem").write_text(answer["ca"])
    click.echo(f"issued certificate serial {answer['serial']} for {login} "
               f"(valid until {answer['not_after']}) in {out_dir}")


@admin_group.command("revoke-cert")
@click.argument("serial")
@handle_errors
def admin_revoke_cert(serial: str) -> None:
    """Revoke a certificate the server CA issued (it is listed in GET /api/v1/ca/crl)."""
    row = client().revoke_cert(serial)
    click.echo(f"revoked certificate serial {row['serial']} ({row['subject']})")


@admin_group.command("certs")
@format_option()
@handle_errors
def admin_certs(fmt: str) -> None:
    """The certificates the server CA issued."""
    output(client().list_certs(), CERT_COLUMNS, fmt, "certificate")
