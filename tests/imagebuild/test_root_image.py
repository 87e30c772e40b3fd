"""A real build of templates/root.yaml: CERN ROOT and uproot inside the image.

The build itself proves ``import ROOT`` works in the image: the spec's checks run
in the finished root filesystem as the unprivileged user, and a failing check
fails the build. Here we read their recorded results and look for ROOT's files
in the ext4 image with debugfs, without booting.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from xwvm.client.imagebuild import Manifest, verify

pytestmark = pytest.mark.slow


def ls(raw: Path, path: str) -> list[str]:
    proc = subprocess.run(["debugfs", "-R", f"ls {path}", str(raw)], capture_output=True,
                          text=True, timeout=60, check=False)
    return proc.stdout.split()


def test_root_template_manifest(root_image: Path) -> None:
    manifest = Manifest.load(root_image)
    assert verify(root_image) == []
    assert manifest.name == "root" and manifest.spec["extends"] == "base"
    assert manifest.shared_apps == ["root"] and manifest.min_memory_mb == 1024
    assert manifest.artifact("disk", "qcow2").virtual_size == 4096 * 2**20
    assert {"root", "uproot"} <= set(manifest.versions["pip"])


def test_import_root_worked_inside_the_image(root_image: Path) -> None:
    checks = {c["name"]: c for c in Manifest.load(root_image).checks}
    assert checks["import-root"]["ok"], checks["import-root"]["output"]
    # ROOT's version and the entries of a histogram filled through cling's JIT.
    assert re.fullmatch(r"6\.\d+[./]\d+ 1000", checks["import-root"]["output"].splitlines()[-1])
    assert checks["import-uproot"]["ok"], checks["import-uproot"]["output"]
    assert checks["python-libs"]["ok"]


def test_root_files_are_in_the_image(root_image: Path) -> None:
    raw = root_image / "disk.raw"
    pylib = ls(raw, "/opt/xwvm/pylib")
    assert "ROOT" in pylib and "uproot" in pylib
    assert any(name.startswith("libCore") for name in ls(raw, "/opt/xwvm/pylib/ROOT/lib")) \
        or "lib" in ls(raw, "/opt/xwvm/pylib/ROOT")
    env = subprocess.run(["debugfs", "-R", "cat /opt/xwvm/env", str(raw)], capture_output=True,
                         text=True, check=True).stdout
    assert "PYTHONPATH=/opt/xwvm/lib:/opt/xwvm/pylib" in env
