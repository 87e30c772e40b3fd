"""Fixtures: real template builds, made once and kept in a cache keyed on their inputs.

A build takes minutes, so its output is kept under ``$XWVM_TEST_IMAGE_CACHE``
(default ``/var/cache/xwvm-test``) in ``images/<name>-<key>``, where the key
hashes the merged spec, ``appliance/init``, ``appliance/rootfs`` and the
Python packages copied into the image (xwvm/client/imagebuild/cache.py): CI
builds once, a developer's rerun reuses it, and any change to those inputs
builds afresh. Downloaded .debs and wheels are kept in
``build-cache`` beside it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from xwvm.client.imagebuild import cache

CACHE_ROOT = Path(os.environ.get("XWVM_TEST_IMAGE_CACHE", str(cache.DEFAULT_CACHE)))
TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
input_key = cache.input_key


def built_image(name: str) -> Path:
    """The build output folder of ``templates/NAME.yaml``, building it if not cached."""
    return cache.built_image(TEMPLATES / f"{name}.yaml", CACHE_ROOT)


@pytest.fixture(scope="session")
def base_image() -> Path:
    return built_image("base")


@pytest.fixture(scope="session")
def root_image() -> Path:
    return built_image("root")
