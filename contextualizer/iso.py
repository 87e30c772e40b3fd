"""Owns the context ISO: packing a seed file set into a deterministic NoCloud ISO and back.

The volume is plain ISO 9660 (what libvirt attaches as a CD-ROM and VirtualBox
as a DVD) labelled ``CIDATA``, with Rock Ridge and Joliet so that names like
``user-data`` keep their exact spelling for Linux and for other readers.

Determinism: pycdlib stamps every directory record, Rock Ridge TF entry and
volume descriptor with ``time.time()`` in local time. After laying out the
tree we overwrite every date object with one fixed UTC instant, and after
writing we overwrite the volume modification date that pycdlib regenerates
while writing (ECMA-119 8.4.27, bytes 830-846 of each volume descriptor).
Entries are added in sorted order and nothing random is written, so the same
context always gives the same bytes, whatever the clock or time zone.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pycdlib
from pycdlib import dates
from pycdlib.pycdlibexception import PyCdlibException

from contextualizer.errors import IsoReadError, ValidationIssue
from contextualizer.model import JobContext
from contextualizer.seed import (
    CONTEXT_JSON,
    META_DATA,
    NETWORK_CONFIG,
    USER_DATA,
    VOLUME_LABEL,
    parse_seed,
    render_seed,
)

#: The instant stamped on every date in the ISO: 2000-01-01T00:00:00Z.
FIXED_DATE = (2000, 1, 1, 0, 0, 0)
_VD_DATE = b"2000010100000000\x00"  # YYYYMMDDHHMMSScc + GMT offset 0
_SECTOR = 2048
_MAX_FILE = 16 * 1024 * 1024  # a context file larger than this is not ours
APPLICATION_ID = "XWVM CONTEXTUALIZER"
ISO_SOURCE = bytes | str | os.PathLike[str]


def build_iso(ctx: JobContext) -> bytes:
    """The context ISO for ``ctx`` as bytes; identical contexts give identical bytes."""
    return pack_files(render_seed(ctx))


def write_iso(ctx: JobContext, path: str | os.PathLike[str]) -> Path:
    """Write the context ISO to ``path`` (atomically, mode 0600: it holds a credential)."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(build_iso(ctx))
    os.replace(tmp, target)
    return target


def read_iso(src: ISO_SOURCE) -> JobContext:
    """Parse a context ISO (bytes or a path) back into a ``JobContext``.

    Raises ``IsoReadError`` when the volume is not labelled CIDATA, is not an
    ISO, or lacks ``meta-data``, ``user-data`` or ``xwvm/context.json``, and
    ``UnsupportedFormatError`` when ``context.json`` has an unknown format.
    """
    return parse_seed(unpack_files(src))


def pack_files(files: Mapping[str, bytes], label: str = VOLUME_LABEL) -> bytes:
    """Pack ``path -> bytes`` (``/``-separated relative paths) into ISO 9660 + RR + Joliet."""
    iso = pycdlib.PyCdlib()
    iso.new(
        interchange_level=1,
        vol_ident=label,
        app_ident_str=APPLICATION_ID,
        joliet=3,
        rock_ridge="1.09",
    )
    names = _Iso9660Names()
    for directory in sorted({p.rpartition("/")[0] for p in files if "/" in p}):
        parts = directory.split("/")
        iso.add_directory(names.path(parts), rr_name=parts[-1], joliet_path="/" + directory)
    for path in sorted(files):
        data = files[path]
        parts = path.split("/")
        iso.add_fp(
            io.BytesIO(data),
            len(data),
            names.path(parts, file=True),
            rr_name=parts[-1],
            joliet_path="/" + path,
        )
    _pin_dates(iso)
    out = io.BytesIO()
    iso.write_fp(out)
    iso.close()
    return _pin_volume_modification_dates(out.getbuffer())


def unpack_files(src: ISO_SOURCE) -> dict[str, bytes]:
    """Read the seed files (by their Rock Ridge/Joliet names) from a context ISO."""
    data = Path(src).read_bytes() if not isinstance(src, bytes) else src
    iso = pycdlib.PyCdlib()
    try:
        iso.open_fp(io.BytesIO(data))
    except PyCdlibException as exc:
        raise IsoReadError(f"not an ISO 9660 volume: {exc}") from exc
    try:
        label = iso.pvd.volume_identifier.decode("ascii", "replace").rstrip(" \x00")
        if label not in (VOLUME_LABEL, VOLUME_LABEL.lower()):
            raise IsoReadError(
                "not a NoCloud context volume",
                [ValidationIssue("volume label", f"is {label!r}, expected {VOLUME_LABEL!r}")],
            )
        files = {}
        for name in (META_DATA, USER_DATA, NETWORK_CONFIG, CONTEXT_JSON):
            content = _read_member(iso, "/" + name)
            if content is not None:
                files[name] = content
        return files
    finally:
        iso.close()


def _read_member(iso: pycdlib.PyCdlib, path: str) -> bytes | None:
    if iso.has_rock_ridge():
        kwargs = {"rr_path": path}
    elif iso.has_joliet():
        kwargs = {"joliet_path": path}
    else:
        raise IsoReadError("context volume has neither Rock Ridge nor Joliet names")
    try:
        record = iso.get_record(**kwargs)
    except PyCdlibException:
        return None
    if record.is_dir() or record.get_data_length() > _MAX_FILE:
        raise IsoReadError(f"{path} is not a regular file of at most {_MAX_FILE} bytes")
    out = io.BytesIO()
    iso.get_file_from_iso_fp(out, **kwargs)
    return out.getvalue()


class _Iso9660Names:
    """Level-1 (8.3, upper case) ISO 9660 names, unique per directory, assigned in order."""

    def __init__(self) -> None:
        self._by_path: dict[tuple[str, ...], str] = {}
        self._used: dict[tuple[str, ...], set[str]] = {}

    def path(self, parts: list[str], file: bool = False) -> str:
        out = []
        for depth in range(len(parts)):
            key = tuple(parts[: depth + 1])
            if key not in self._by_path:
                last = file and depth == len(parts) - 1
                self._by_path[key] = self._name(tuple(parts[:depth]), parts[depth], last)
            out.append(self._by_path[key])
        return "/" + "/".join(out)

    def _name(self, parent: tuple[str, ...], name: str, file: bool) -> str:
        stem, _, ext = name.rpartition(".") if "." in name else (name, "", "")
        stem, ext = _dchars(stem)[:8] or "F", _dchars(ext)[:3]
        used = self._used.setdefault(parent, set())
        candidate, n = stem, 0
        while _full(candidate, ext, file) in used:
            n += 1
            candidate = f"{stem[: 8 - len(str(n))]}{n}"
        used.add(_full(candidate, ext, file))
        return _full(candidate, ext, file)


def _dchars(text: str) -> str:
    return re.sub(r"[^A-Z0-9_]", "_", text.upper())


def _full(stem: str, ext: str, file: bool) -> str:
    return f"{stem}.{ext};1" if file else stem


def _pin_dates(iso: pycdlib.PyCdlib) -> None:
    """Set every date object reachable from ``iso`` to ``FIXED_DATE`` in UTC."""
    seen: set[int] = set()
    stack: list[Any] = [iso]
    leaf = (int, float, str, bytes, bool, type(None), io.IOBase)
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, leaf):
            continue
        seen.add(id(obj))
        if isinstance(obj, dates.DirectoryRecordDate):
            _pin_dr_date(obj)
        elif isinstance(obj, dates.VolumeDescriptorDate):
            _pin_vd_date(obj)
        elif isinstance(obj, list | tuple | set | frozenset):
            stack.extend(obj)
        elif isinstance(obj, dict):
            stack.extend(obj.values())
        elif type(obj).__module__.startswith("pycdlib"):
            stack.extend(_attributes(obj))


def _attributes(obj: object) -> list[Any]:
    values = list(getattr(obj, "__dict__", {}).values())
    for cls in type(obj).__mro__:
        for slot in getattr(cls, "__slots__", ()):
            values.append(getattr(obj, slot, None))
    return values


def _pin_dr_date(date: dates.DirectoryRecordDate) -> None:
    year, month, day, hour, minute, second = FIXED_DATE
    date.years_since_1900 = year - 1900
    date.month, date.day_of_month = month, day
    date.hour, date.minute, date.second, date.gmtoffset = hour, minute, second, 0


def _pin_vd_date(date: dates.VolumeDescriptorDate) -> None:
    if date.year == 0:  # "not specified" (e.g. expiration) stays all zeros
        return
    year, month, day, hour, minute, second = FIXED_DATE
    date.year, date.month, date.dayofmonth = year, month, day
    date.hour, date.minute, date.second = hour, minute, second
    date.hundredthsofsecond, date.gmtoffset = 0, 0
    date.date_str = _VD_DATE


def _pin_volume_modification_dates(image: memoryview) -> bytes:
    """Overwrite the modification date of every primary/supplementary volume descriptor."""
    buf = bytearray(image)
    offset = 16 * _SECTOR
    while offset + _SECTOR <= len(buf) and buf[offset + 1 : offset + 6] == b"CD001":
        vd_type = buf[offset]
        if vd_type == 255:  # set terminator
            break
        if vd_type in (1, 2):
            buf[offset + 830 : offset + 847] = _VD_DATE
        offset += _SECTOR
    return bytes(buf)
