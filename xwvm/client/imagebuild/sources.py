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
import os
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path

#: What ``appliance/`` holds for the image itself, installed elsewhere than the library.
APPLIANCE_DATA = ("rootfs", "init", "initramfs-init")
_SKIPPED = {"__pycache__", ".git"}
_SKIPPED_SUFFIXES = (".pyc", ".gitkeep")

Locate = Callable[[str], Path]


class SourceError(LookupError):
    """An input of the image refused: not importable, in several places, a symbolic link, or
    outside the package folder it must come from (the image is signed: nothing of the build
    host's but these packages' own files may go into it)."""


def package_dir(package: str) -> Path:
    """The one folder that package ``package`` (``a/b`` or ``a.b``) is imported from."""
    found = importlib.util.find_spec(package.replace("/", "."))
    if found is None or not found.submodule_search_locations:
        raise SourceError(f"package {package!r} is not importable here")
    places = list(found.submodule_search_locations)
    if len(places) != 1:
        raise SourceError(f"package {package!r} is a namespace package in {len(places)} "
                          f"folders ({', '.join(places)}): which one the image takes would "
                          "be a guess")
    return Path(places[0])


def import_root(package: str = "appliance") -> Path:
    """The folder ``package`` is imported from: a spec's ``files`` sources are relative to
    the appliance's (``appliance/rootfs``)."""
    return package_dir(package).parents[package.count("/") + package.count(".")]


def files_source(source: str, locate: Locate = package_dir) -> Path:
    """A spec's ``files`` source (``appliance/rootfs``), relative to the folder the appliance
    is imported from: it must exist and, links resolved, lie inside the appliance's folder
    (not another package's, not the build host's). The message names the rule only."""
    appliance = locate("appliance")
    path = appliance.parent / source
    if not path.exists():
        raise SourceError(f"does not exist under {appliance.parent}")
    if not path.resolve().is_relative_to(appliance.resolve()):
        raise SourceError(f"is not inside the appliance package folder {appliance}")
    return path


def appliance_file(name: str, locate: Locate = package_dir) -> Path:
    """One of the appliance's own files (``init``, ``initramfs-init``, ``rootfs``)."""
    folder = locate("appliance")
    return _own(folder / name, folder)


def schema_text() -> str:
    """The template spec JSON Schema, shipped as this package's data."""
    return (resources.files(__package__) / "template-schema.json").read_text()


def guest_files(entries: tuple[str, ...], locate: Locate = package_dir) -> list[tuple[Path, str]]:
    """Every (source file, path under the image's library folder) that ``entries`` copy,
    sorted. An entry is a package (``appliance``, ``xwvm/protocol``: its whole tree, less
    the appliance's own files) or one module of a package (``contextualizer/model.py``:
    that file alone); either brings its parents' ``__init__.py`` and nothing else of them.
    A symbolic link among them refuses the build (:class:`SourceError`)."""
    files: dict[str, Path] = {}
    for entry in entries:
        parts = entry.split("/")
        for depth in range(1, len(parts)):
            parent = locate("/".join(parts[:depth]))
            files[f"{'/'.join(parts[:depth])}/__init__.py"] = _own(parent / "__init__.py",
                                                                   parent)
        if entry.endswith(".py"):
            folder = locate("/".join(parts[:-1]))
            files[entry] = _own(folder / parts[-1], folder)
            continue
        top = locate(entry)
        skip = APPLIANCE_DATA if entry == "appliance" else ()
        files.update((f"{entry}/{rel}", path) for path, rel in _tree(top, skip))
    return [(files[name], name) for name in sorted(files)]


def _tree(top: Path, skip_top: tuple[str, ...]) -> Iterator[tuple[Path, str]]:
    """(file, its path under ``top``) for the files of ``top`` that are copied. Links are not
    followed: one is refused, whether to a file or a folder, inside ``top`` or not."""
    for folder, dirs, names in os.walk(top):
        here = Path(folder)
        for name in [*dirs, *names]:
            path = here / name
            rel = path.relative_to(top)
            if _copied(rel, skip_top):
                _own(path, top)
                if name in names:
                    yield path, rel.as_posix()
        dirs[:] = [d for d in dirs if _copied((here / d).relative_to(top), skip_top)]


def _own(path: Path, folder: Path) -> Path:
    """``path``, if it is no symbolic link and lies inside ``folder`` once resolved."""
    if path.is_symlink():
        raise SourceError(f"{path} is a symbolic link: the image takes no links from the "
                          "build host (its target would be copied into a signed image)")
    if not path.resolve().is_relative_to(folder.resolve()):
        raise SourceError(f"{path} lies outside its package folder {folder}")
    return path


def _copied(rel: Path, skip_top: tuple[str, ...]) -> bool:
    if rel.parts[0] in skip_top or _SKIPPED.intersection(rel.parts):
        return False
    return not rel.name.endswith(_SKIPPED_SUFFIXES)
