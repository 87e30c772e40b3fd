"""Test data for the contextualizer tests: fixed keys, a typical user context, a fixed job.

A uniquely named module (not ``conftest``) so that test files and child
processes can import it without clashing with other test folders.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from contextualizer import InputRef, JobSpec, Limits, Payload

GOLDEN = Path(__file__).parent / "golden"
CREDENTIAL = "xwcred-7f3a9c0e5b2d4e6f8a1b3c5d7e9f0a2b"
CA_PEM = (
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBdzCCAR2gAwIBAgIUXWVMGnQ2cEeE0tRk0aXh3L1dFJIwCgYIKoZIzj0EAwIw\n"
    "-----END CERTIFICATE-----\n"
)
INSTALL_HINT = "run scripts/install-system.sh (it installs Debian's cloud-init)"


def openssh(public_key: object, comment: str) -> str:
    line = public_key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()
    return f"{line} {comment}"


# Derived from fixed private values, so the golden files never change.
ED25519_KEY = openssh(
    ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32))).public_key(), "alice@lab"
)
ECDSA_KEY = openssh(ec.derive_private_key(123456789, ec.SECP256R1()).public_key(), "alice laptop")


def user_doc() -> dict:
    """A typical user context: 2 keys, env, a file, a hostname."""
    return {
        "ssh_authorized_keys": [ED25519_KEY, ECDSA_KEY],
        "env": {"ROOT_MACRO": "fit.C", "NEVENTS": "100000", "API_TOKEN": "user-secret-42"},
        "network": "server",
        "hostname": "alice-fit",
        "files": [
            {
                "path": "/home/xwvm/run.sh",
                "content": "#!/bin/sh\nroot -b -q fit.C\n",
                "mode": "0755",
            },
            {"path": "/etc/xwvm/site.conf", "content": "site = lab\n"},
        ],
    }


def job_spec(**overrides: object) -> JobSpec:
    fields: dict = {
        "job_uid": "2b6f1c9e-4a1d-4c55-9d0e-1f2a3b4c5d6e",
        "owner": "alice",
        "app": "root",
        "server_url": "https://xwvm.example.org:4443",
        "server_ca_pem": CA_PEM,
        "credential": CREDENTIAL,
        "payload": Payload(
            command="root",
            args=("-b", "-q", "fit.C"),
            env={"OMP_NUM_THREADS": "2"},
            inputs=(
                InputRef("d-001", "fit.C", "a" * 64),
                InputRef("d-002", "events.root", "b" * 64),
                InputRef("d-003", "calib.json", "c" * 64),
            ),
        ),
        "limits": Limits(wall_clock_seconds=3600, cpus=2, memory_mb=2048, disk_mb=8192),
    }
    fields.update(overrides)
    return JobSpec(**fields)
