"""Fixtures for the contextualizer tests (data lives in ``ctx_testdata``)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from contextualizer import JobContext, build_job_context

# The test modules import ``ctx_testdata`` from this folder; make that work
# under any pytest import mode, not only the default "prepend".
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

from ctx_testdata import INSTALL_HINT, job_spec, openssh, user_doc  # noqa: E402


@pytest.fixture(scope="session")
def rsa_key() -> str:
    return openssh(rsa.generate_private_key(65537, 2048).public_key(), "rsa@lab")


@pytest.fixture(scope="session")
def small_rsa_key() -> str:
    return openssh(rsa.generate_private_key(65537, 1024).public_key(), "weak@lab")


@pytest.fixture
def ctx() -> JobContext:
    return build_job_context(user_doc(), job_spec())


@pytest.fixture(scope="session")
def cloud_init() -> str:
    """Path of Debian's cloud-init; a missing one fails the test (no skipping)."""
    path = shutil.which("cloud-init")
    if path is None:
        pytest.fail(f"cloud-init is not on PATH: {INSTALL_HINT}")
    return path


@pytest.fixture(scope="session")
def cloud_init_python(cloud_init: str) -> str:
    """The interpreter cloud-init runs under (its own modules live there, not in our venv)."""
    shebang = Path(cloud_init).read_text().splitlines()[0]
    if not shebang.startswith("#!"):
        pytest.fail(f"cannot find cloud-init's Python in {cloud_init}: {INSTALL_HINT}")
    return shebang[2:].strip().split()[0]


@pytest.fixture(scope="session")
def blkid() -> str:
    for candidate in (shutil.which("blkid"), "/usr/sbin/blkid", "/sbin/blkid"):
        if candidate and Path(candidate).exists():
            return candidate
    pytest.fail("blkid (util-linux) is not installed")
