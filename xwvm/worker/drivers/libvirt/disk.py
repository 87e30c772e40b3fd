"""Copy-on-write overlays on cached templates, with qemu-img; the template is only read.

A template's bytes are hostile until proven otherwise (a crafted image can be signed, or
a cached file substituted): a qcow2 header may name a backing file or an external data
file (a host path, or ``nbd://`` somewhere on the LAN) that QEMU would open for the
guest. :func:`check_template` refuses such images before anything opens them, and the
overlay names its backing file and format explicitly, so nothing is probed.
"""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path

from xwvm.worker.drivers.errors import DriverError, SpecError

QCOW2_MAGIC = b"QFI\xfb"
QCOW2_EXT_DATA_FILE = 0x44415441  # header extension naming an external data file
QCOW2_INCOMPAT_DATA_FILE = 1 << 2
QCOW2_HEADER_MAX = 64 * 1024      # the header and its extensions live in the first cluster


def virtual_size(path: Path, fmt: str) -> int:
    """The template's virtual size in bytes, read from the qcow2 header (no process)."""
    try:
        if fmt == "raw":
            return path.stat().st_size
        with path.open("rb") as f:
            header = f.read(32)
    except OSError as e:
        raise SpecError(f"template {path} unreadable: {e.strerror}") from e
    if header[:4] != QCOW2_MAGIC:
        raise SpecError(f"template {path} is not a qcow2 image")
    return int(struct.unpack(">Q", header[24:32])[0])


def qcow2_references(header: bytes) -> list[str]:
    """What a qcow2 header makes QEMU open besides the image itself: "a backing file",
    "an external data file" (empty when none). Parsed here, so that no QEMU tool opens
    them first."""
    found = []
    version, backing_offset = struct.unpack_from(">IQ", header, 4)
    if backing_offset:
        found.append("a backing file")
    if version < 3:
        return found
    incompatible = struct.unpack_from(">Q", header, 72)[0]
    offset = struct.unpack_from(">I", header, 100)[0]
    data_file = bool(incompatible & QCOW2_INCOMPAT_DATA_FILE)
    while not data_file and offset + 8 <= len(header):
        kind, length = struct.unpack_from(">II", header, offset)
        if kind == 0:
            break
        data_file = kind == QCOW2_EXT_DATA_FILE
        offset += 8 + (length + 7) // 8 * 8
    if data_file:
        found.append("an external data file")
    return found


def check_template(template: Path, fmt: str) -> None:
    """Refuse a template whose image names other files (backing chain, external data):
    first from the header bytes, then as ``qemu-img info`` (shared, no chain) reads it."""
    if fmt != "qcow2":
        return  # raw: read as raw, its bytes are never interpreted (the overlay says -F raw)
    try:
        with template.open("rb") as f:
            header = f.read(QCOW2_HEADER_MAX)
        found = qcow2_references(header) if header[:4] == QCOW2_MAGIC else []
    except (OSError, struct.error) as e:
        raise SpecError(f"template {template.name} has an unreadable qcow2 header") from e
    if not found:
        found = _qemu_img_references(template)
    if found:
        raise SpecError(f"template {template.name} refused: its qcow2 header names "
                        f"{' and '.join(found)} (a template must be self-contained)",
                        code="template_refused")


def _qemu_img_references(template: Path) -> list[str]:
    cmd = ["qemu-img", "info", "-U", "--output=json", "-f", "qcow2", str(template)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        info = json.loads(proc.stdout) if proc.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError) as e:
        raise DriverError(f"qemu-img info failed: {e}") from e
    if not isinstance(info, dict):
        raise SpecError(f"template {template.name} is not a valid qcow2 image",
                        code="template_refused")
    found = []
    if info.get("backing-filename") or info.get("full-backing-filename"):
        found.append("a backing file")
    data = (info.get("format-specific") or {}).get("data") or {}
    if data.get("data-file") or data.get("data-file-raw"):
        found.append("an external data file")
    return found


def create_overlay(template: Path, fmt: str, overlay: Path, size: int) -> None:
    """A qcow2 overlay of ``size`` bytes backed by ``template``: a few KiB, whatever the
    template's size (qemu-img writes only the overlay's header and tables). The template
    is checked first; the overlay names it by its exact path and format, and ``-u`` keeps
    qemu-img from opening it at all (the size is given)."""
    check_template(template, fmt)
    cmd = ["qemu-img", "create", "-q", "-f", "qcow2", "-u", "-F", fmt, "-b",
           str(template.resolve()), str(overlay), str(size)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DriverError(f"qemu-img create failed: {e}") from e
    if proc.returncode != 0:
        full = "No space left on device" in proc.stderr or "Disk quota exceeded" in proc.stderr
        raise DriverError(f"qemu-img create failed: {proc.stderr.strip()}",
                          code="disk_full" if full else None)
