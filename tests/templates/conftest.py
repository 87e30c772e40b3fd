"""Fixtures for the template service: a real server, signing keys, synthetic artifacts."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from tests.support.processes import ServerProcess
from xwvm import signing
from xwvm.client.sdk import Client
from xwvm.server.db.engine import make_engine, make_sessionmaker
from xwvm.server.db.models import Work

MiB = 1024 * 1024


def random_file(path: Path, size: int) -> Path:
    """Unique incompressible content (so no two tests share a blob)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(uuid.uuid4().bytes)
        f.write(os.urandom(size - 16))
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def server_blob(server: ServerProcess, digest: str) -> Path:
    return server.data_dir / "blobs" / "images" / digest[:2] / digest[2:4] / digest


def push(c: Client, name: str, version: str, files: dict[str, Path], *,
         fmt: str = "qcow2", key: Ed25519PrivateKey | None = None, publish: bool = True,
         **fields: Any) -> dict[str, Any]:
    """Upload ``files`` ({role: path}) and create the template (signed, published)."""
    artifacts = []
    for role, path in files.items():
        up = c.upload_file(path)
        artifacts.append({"role": role, "format": {"disk": fmt, "kernel": "linux-kernel",
                                                   "initrd": "initrd"}[role],
                          "upload": up["uid"]})
    t = c.create_template({"name": name, "version": version, "artifacts": artifacts,
                           "cmdline": "console=ttyS0 root=LABEL=xwvm", "shared_apps": ["root"],
                           **fields})
    if key is not None:
        sig = signing.sign(t["manifest"], key)
        t = c.sign_template(t["uid"], sig.public_key, sig.signature)
    if publish:
        t = c.publish_template(t["uid"])
    return t


@dataclass
class Keys:
    private: Ed25519PrivateKey
    key_id: str

    @property
    def trusted(self) -> dict[str, Any]:
        return {self.key_id: self.private.public_key()}


@pytest.fixture(scope="session")
def keys() -> Keys:
    k = Ed25519PrivateKey.generate()
    return Keys(k, signing.key_id(k.public_key()))


@pytest.fixture(scope="module")
def admin(shared_server: ServerProcess) -> Client:
    return shared_server.client()


@pytest.fixture(scope="module")
def server_db(shared_server: ServerProcess) -> Iterator[sessionmaker[Session]]:
    """Sessions on the running server's database; end each one quickly (SQLite locks)."""
    engine = make_engine(f"sqlite:///{shared_server.data_dir / 'xwvm.db'}")
    yield make_sessionmaker(engine)
    engine.dispose()


@dataclass
class WorkerAccount:
    client: Client
    host_uid: str
    uid: str


def worker_account(server: ServerProcess, admin: Client) -> WorkerAccount:
    cred = admin.enroll_worker(public=True)
    c = Client(server.url, server.ca)
    c.login(cred["login"], cred["password"])
    host = c.register_host({"name": f"h-{cred['login']}", "os": "linux", "arch": "x86_64",
                            "cpus": 2, "memory_mb": 4096, "disk_mb": 100000})
    return WorkerAccount(c, host["uid"], c.whoami()["uid"])


def vm_job(sessions: sessionmaker[Session], owner_uid: str, template_uid: str,
           status: str) -> str:
    """A VM job row (the submission API for VM jobs is another module's); its uid."""
    with sessions() as db:
        w = Work(owner_uid=owner_uid, access_rights=0o700, status=status,
                 template_uid=template_uid, command="true")
        db.add(w)
        db.commit()
        return w.uid


def set_job(sessions: sessionmaker[Session], uid: str, **values: Any) -> None:
    with sessions() as db:
        db.execute(update(Work).where(Work.uid == uid).values(**values))
        db.commit()
