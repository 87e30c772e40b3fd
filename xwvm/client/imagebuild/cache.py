"""Builds kept in a folder keyed on everything that goes into them, so that the same spec
and code build once: used by the tests, `make demo` and admins' scripts."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from xwvm.client.imagebuild import sources
from xwvm.client.imagebuild.builder import BuildOptions, build
from xwvm.client.imagebuild.manifest import MANIFEST_NAME
from xwvm.client.imagebuild.spec import TemplateSpec, load_spec

DEFAULT_CACHE = Path("/var/cache/xwvm-test")


def image_inputs(spec: TemplateSpec,
                 locate: sources.Locate = sources.package_dir) -> list[tuple[Path, str]]:
    """(file, name) for every file of ours that goes into ``spec``'s image: the guest's
    Python packages exactly as they are copied, the appliance's init and initramfs init,
    and the spec's ``files`` trees. Server, worker and client code is not among them."""
    inputs = [(sources.appliance_file(name, locate), f"appliance/{name}")
              for name in ("init", "initramfs-init")]
    for copy in spec.files:
        tree = sorted(copy.source.rglob("*")) if copy.source.is_dir() else [copy.source]
        inputs += [(p, f"{copy.dest}:{p.relative_to(copy.source).as_posix()}") for p in tree]
    inputs += [(p, f"lib/{name}") for p, name in sources.guest_files(spec.python_packages,
                                                                      locate)]
    return inputs


def input_key(spec: TemplateSpec, locate: sources.Locate = sources.package_dir) -> str:
    """The merged spec (the schema checked it) and every file of :func:`image_inputs`: a
    change to any of them means a new image, and a change to nothing else does not."""
    digest = hashlib.sha256(spec.sha256.encode())
    for path, name in image_inputs(spec, locate):
        if path.is_file():
            digest.update(name.encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def built_image(spec_path: Path, cache_root: Path = DEFAULT_CACHE) -> Path:
    """The build output folder of the spec at ``spec_path``, building it if not cached."""
    spec = load_spec(spec_path)
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
