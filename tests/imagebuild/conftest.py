"""Fixtures: real template builds, made once and kept in a cache keyed on their inputs.

A build takes minutes, so its output is kept under ``$XWVM_TEST_IMAGE_CACHE``
(default ``/var/cache/xwvm-test``) in ``images/<name>-<key>``, where the key
hashes the merged spec, ``appliance/init``, ``appliance/rootfs`` and the
builder's own code: CI builds once, a developer's rerun reuses it, and any
change to those inputs builds afresh. Downloaded .debs and wheels are kept in
``build-cache`` beside it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from xwvm.client.imagebuild import BuildOptions, build, load_spec
from xwvm.client.imagebuild.manifest import MANIFEST_NAME
from xwvm.client.imagebuild.spec import SOURCE_ROOT, TemplateSpec

CACHE_ROOT = Path(os.environ.get("XWVM_TEST_IMAGE_CACHE", "/var/cache/xwvm-test"))
TEMPLATES = SOURCE_ROOT / "templates"


def input_key(spec: TemplateSpec) -> str:
    digest = hashlib.sha256(spec.sha256.encode())
    # The image carries the builder's output and the Python packages copied into it
    # (xwvm, contextualizer, appliance): a change to any of them means a new image.
    inputs = [SOURCE_ROOT / "appliance" / "init", SOURCE_ROOT / "templates" / "schema.json",
              *sorted((SOURCE_ROOT / "appliance" / "rootfs").rglob("*")),
              *sorted(p for package in spec.python_packages
                      for p in (SOURCE_ROOT / package).rglob("*.py"))]
    for path in inputs:
        if path.is_file():
            digest.update(str(path.relative_to(SOURCE_ROOT)).encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def built_image(name: str) -> Path:
    """The build output folder of ``templates/NAME.yaml``, building it if not cached."""
    spec = load_spec(TEMPLATES / f"{name}.yaml")
    images = CACHE_ROOT / "images"
    out = images / f"{spec.name}-{input_key(spec)}"
    if (out / MANIFEST_NAME).is_file():
        return out
    for stale in images.glob(f"{spec.name}-*"):
        if stale.is_symlink():
            stale.unlink()
        else:
            shutil.rmtree(stale, ignore_errors=True)
    build(spec, BuildOptions(out_dir=out, keep_raw=True, cache_dir=CACHE_ROOT / "build-cache"))
    return out


@pytest.fixture(scope="session")
def base_image() -> Path:
    return built_image("base")


@pytest.fixture(scope="session")
def root_image() -> Path:
    return built_image("root")
