"""Owns where an image's inputs come from, without assuming a source checkout.

The guest's Python packages (or single modules of one, such as the contextualizer's
reader) and the appliance's own files (its init, the initramfs init,
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


def guest_files(entries: tuple[str, ...], locate: Locate = package_dir) -> list[tuple[Path, str]]:
    """Every (source file, path under the image's library folder) that ``entries`` copy,
    sorted. An entry is a package (``appliance``, ``xwvm/protocol``: its whole tree, less
    the appliance's own files) or one module of a package (``contextualizer/model.py``:
    that file alone); either brings its parents' ``__init__.py`` and nothing else of them."""
    files: dict[str, Path] = {}
    for entry in entries:
        parts = entry.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            files[f"{parent}/__init__.py"] = locate(parent) / "__init__.py"
        if entry.endswith(".py"):
            files[entry] = locate("/".join(parts[:-1])) / parts[-1]
            continue
        top = locate(entry)
        skip = APPLIANCE_DATA if entry == "appliance" else ()
        for path in sorted(top.rglob("*")):
            rel = path.relative_to(top)
            if path.is_file() and _copied(rel, skip):
                files[f"{entry}/{rel.as_posix()}"] = path
    return [(files[name], name) for name in sorted(files)]


def _copied(rel: Path, skip_top: tuple[str, ...]) -> bool:
    if rel.parts[0] in skip_top or _SKIPPED.intersection(rel.parts):
        return False
    return not rel.name.endswith(_SKIPPED_SUFFIXES)
