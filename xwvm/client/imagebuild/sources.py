"""Owns where an image's inputs come from, without assuming a source checkout.

The guest's Python packages and the appliance's own files (its init, the initramfs init,
``rootfs/``) are found where Python imports them from: a checkout, an editable install or
an installed wheel (pyproject ships them as package data). The template JSON Schema ships
inside this package. :func:`guest_files` is the one list of what the image's
``/opt/xwvm/lib`` receives, so the copy and the build cache's key cannot disagree.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from importlib import resources
from pathlib import Path

#: The packages an image may carry: the guest and only what the guest imports.
#: ``xwvm/protocol`` brings ``xwvm/__init__.py`` with it, and nothing else of ``xwvm``.
GUEST_PACKAGES = ("appliance", "contextualizer", "xwvm/protocol")
#: What ``appliance/`` holds for the image itself, installed elsewhere than the library.
APPLIANCE_DATA = ("rootfs", "init", "initramfs-init")
_SKIPPED = {"__pycache__", ".git"}
_SKIPPED_SUFFIXES = (".pyc", ".gitkeep")

Locate = Callable[[str], Path]


def package_dir(package: str) -> Path:
    """The folder that package ``package`` (``a/b`` or ``a.b``) is imported from."""
    found = importlib.util.find_spec(package.replace("/", "."))
    if found is None or not found.submodule_search_locations:
        raise LookupError(f"package {package!r} is not importable here")
    return Path(next(iter(found.submodule_search_locations)))


def import_root(package: str = "appliance") -> Path:
    """The folder ``package`` is imported from: a spec's ``files`` sources are relative to
    the appliance's (``appliance/rootfs``)."""
    return package_dir(package).parents[package.count("/") + package.count(".")]


def appliance_file(name: str, locate: Locate = package_dir) -> Path:
    """One of the appliance's own files (``init``, ``initramfs-init``, ``rootfs``)."""
    return locate("appliance") / name


def schema_text() -> str:
    """The template spec JSON Schema, shipped as this package's data."""
    return (resources.files(__package__) / "template-schema.json").read_text()


def guest_files(packages: tuple[str, ...], locate: Locate = package_dir) -> list[tuple[Path, str]]:
    """Every (source file, path under the image's library folder) that ``packages`` copy,
    sorted: each package's tree (less the appliance's own files) and, for a subpackage
    such as ``xwvm/protocol``, its parents' ``__init__.py``."""
    files: dict[str, Path] = {}
    for package in packages:
        top = locate(package)
        parts = package.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            files[f"{parent}/__init__.py"] = locate(parent) / "__init__.py"
        skip = APPLIANCE_DATA if package == "appliance" else ()
        for path in sorted(top.rglob("*")):
            rel = path.relative_to(top)
            if path.is_file() and _copied(rel, skip):
                files[f"{package}/{rel.as_posix()}"] = path
    return [(files[name], name) for name in sorted(files)]


def _copied(rel: Path, skip_top: tuple[str, ...]) -> bool:
    if rel.parts[0] in skip_top or _SKIPPED.intersection(rel.parts):
        return False
    return not rel.name.endswith(_SKIPPED_SUFFIXES)
