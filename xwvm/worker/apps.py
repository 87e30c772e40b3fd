"""Owns the check that a job's program may run on this host, outside any VM.

A native app's binary runs only when a key this worker trusts signed the app's manifest
(xwvm.signing.canonical_app_manifest, recomputed here from the fields the server sent)
and the file the job fetches is the signed binary for this host's os/arch: its sha256
is the signed one, and the data cache checks every downloaded byte against it. So a
server (or an admin account) that swaps a binary, or edits the manifest to match a new
one, runs nothing. A shared app (e.g. root) has no binary: its command runs only for an
app this worker's owner shares (``--shared-app``); the server cannot make one up.

Nothing the server says is believed for the choice: not the kind of app it claims, nor a
file's role; a job with a command places no binary, a job without one runs only the
signed binary.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Collection, Mapping

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from xwvm import signing
from xwvm.errors import XwvmError
from xwvm.ids import BadId, check_sha256
from xwvm.protocol.messages import InputFile, JobDescription
from xwvm.protocol.platforms import normalize_arch

FileFilter = Callable[[InputFile], bool]
TRUST_HINT = ("this worker runs only native apps signed by a key its owner trusts "
              "(--trusted-key; 'xwvm app sign' signs one)")


class AppRefused(XwvmError):
    """This worker will not run the job's program; the message goes into the job's error."""

    status, code = 422, "app_refused"


def this_platform() -> tuple[str, str]:
    return platform.system().lower(), normalize_arch(platform.machine())


def binary_filter(job: JobDescription, trusted: Mapping[str, Ed25519PublicKey], *,
                  shared_apps: Collection[str], allow_unsigned: bool) -> FileFilter:
    """Which of the job's ``app`` files may be placed as its program; raise
    :class:`AppRefused` when the job may not run here at all."""
    if job.command:
        if job.app not in shared_apps:
            raise AppRefused("the job runs a command with a shared app this worker does not "
                             "provide (--shared-app)", code="app_not_shared")
        return lambda f: False  # a shared app's program is the worker's own
    if allow_unsigned:  # its owner said so (--allow-unsigned-apps)
        return lambda f: True
    sha = signed_sha256(job, trusted, this_platform())
    if not any(f.role == "app" and f.sha256 == sha for f in job.files):
        raise AppRefused("the server sent no file with the signed binary for this host",
                         code="binary_not_signed")
    return lambda f: f.sha256 == sha


def signed_sha256(job: JobDescription, trusted: Mapping[str, Ed25519PublicKey],
                  host: tuple[str, str]) -> str:
    """The sha256 a trusted key signed for ``host``'s (os, arch) binary of the job's app."""
    signed = job.signed_app
    if signed is None:
        raise AppRefused(f"the app comes without a manifest: it is unsigned; {TRUST_HINT}",
                         code="unsigned")
    manifest = signing.canonical_app_manifest(signed.to_json())
    label = f"app {signed.name[:128]}"
    if signed.manifest not in (None, manifest):
        raise AppRefused(f"{label}: its manifest does not match its fields (altered)",
                         code="manifest_mismatch")
    if signed.name != job.app:
        raise AppRefused(f"{label}: the job names another app than the signed one",
                         code="manifest_mismatch")
    try:
        signing.trusted_signer(manifest, signed.signatures, trusted)
    except signing.Unverified as e:
        raise AppRefused(f"{label} {e.message}; {TRUST_HINT}", code=e.code) from None
    for b in signed.binaries:
        if (b.os, b.arch) == host:
            try:
                return check_sha256(b.sha256, "app binary")
            except BadId as e:
                raise AppRefused(e.message, code="bad_manifest") from None
    raise AppRefused(f"{label} has no signed binary for {host[0]}/{host[1]}",
                     code="no_binary")
