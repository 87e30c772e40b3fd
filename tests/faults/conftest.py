"""The fault suite's grid: a real server on its own PostgreSQL (so that PostgreSQL itself
can be restarted), the built "base" template pushed, signed and published, and real
workers on the system libvirtd (scripts/install-vm-host.sh)."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.harness import FaultGrid, PatientClient
from tests.imagebuild.conftest import built_image
from tests.support.postgres import PostgresServer
from tests.support.processes import ADMIN_PASSWORD, ServerProcess, run_cli
from xwvm import signing

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def vm_host() -> None:
    proc = subprocess.run([str(REPO / "scripts" / "install-vm-host.sh")],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def grid(vm_host: None) -> Iterator[FaultGrid]:
    image = built_image("base")
    root = Path(tempfile.mkdtemp(prefix="xwf-", dir="/var/tmp"))
    root.chmod(0o711)  # the QEMU user traverses it to the workers' VM folders
    pg = PostgresServer(root / "pg").start()
    server = ServerProcess(root / "srv", db_url=pg.create_database("faults")).init()
    server.start()
    try:
        home = root / "admin-cli"
        run_cli(["login", "--server", server.url, "--ca", str(server.ca), "--user", "admin",
                 "--password-file", str(server.password_file)], home)
        keys = root / "keys"
        run_cli(["admin", "keygen", "-o", str(keys)], home)
        run_cli(["template", "push", str(image), "--disk-format", "qcow2"], home, timeout=600)
        manifest = json.loads((image / "manifest.json").read_text())
        ref = f"{manifest['name']}:{manifest['version']}"
        run_cli(["template", "sign", ref, "--key", str(keys / signing.PRIVATE_KEY_FILE)],
                home)
        run_cli(["template", "publish", ref], home)
        admin = PatientClient(server.url, server.ca)
        admin.login("admin", ADMIN_PASSWORD)
        yield FaultGrid(server, admin, root, keys / signing.PUBLIC_KEY_FILE, pg)
    finally:
        server.stop()
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)
