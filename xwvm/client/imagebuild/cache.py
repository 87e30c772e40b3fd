"""Builds kept in a folder keyed on everything that goes into them, so that the same spec
and code build once: used by the tests, `make demo` and admins' scripts."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from xwvm.client.imagebuild.builder import BuildOptions, build
from xwvm.client.imagebuild.manifest import MANIFEST_NAME
from xwvm.client.imagebuild.spec import SOURCE_ROOT, TemplateSpec, load_spec

DEFAULT_CACHE = Path("/var/cache/xwvm-test")


def input_key(spec: TemplateSpec) -> str:
    """The merged spec, the appliance's files and the Python packages copied into the
    image (xwvm, contextualizer, appliance): a change to any of them means a new image."""
    digest = hashlib.sha256(spec.sha256.encode())
    inputs = [SOURCE_ROOT / "appliance" / "init", SOURCE_ROOT / "appliance" / "initramfs-init",
              SOURCE_ROOT / "templates" / "schema.json",
              *sorted((SOURCE_ROOT / "appliance" / "rootfs").rglob("*")),
              *sorted(p for package in spec.python_packages
                      for p in (SOURCE_ROOT / package).rglob("*.py"))]
    for path in inputs:
        if path.is_file():
            digest.update(str(path.relative_to(SOURCE_ROOT)).encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def built_image(name: str, cache_root: Path = DEFAULT_CACHE) -> Path:
    """The build output folder of ``templates/NAME.yaml``, building it if not cached."""
    spec = load_spec(SOURCE_ROOT / "templates" / f"{name}.yaml")
    images = cache_root / "images"
    out = images / f"{spec.name}-{input_key(spec)}"
    if (out / MANIFEST_NAME).is_file():
        return out
    for stale in images.glob(f"{spec.name}-*"):
        if stale.is_symlink() or stale.is_file():
            stale.unlink()
        else:
            shutil.rmtree(stale, ignore_errors=True)
    build(spec, BuildOptions(out_dir=out, keep_raw=True, cache_dir=cache_root / "build-cache"))
    return out
