"""Copy-on-write overlays on cached templates, with qemu-img; the template is only read."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

from xwvm.worker.drivers.errors import DriverError, SpecError

QCOW2_MAGIC = b"QFI\xfb"


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


def create_overlay(template: Path, fmt: str, overlay: Path, size: int) -> None:
    """A qcow2 overlay of ``size`` bytes backed by ``template``: a few KiB, whatever the
    template's size (qemu-img writes only the overlay's header and tables)."""
    cmd = ["qemu-img", "create", "-q", "-f", "qcow2", "-F", fmt, "-b", str(template),
           str(overlay), str(size)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DriverError(f"qemu-img create failed: {e}") from e
    if proc.returncode != 0:
        raise DriverError(f"qemu-img create failed: {proc.stderr.strip()}")
