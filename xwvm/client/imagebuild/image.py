"""Owns disk images: a root folder into an ext4 filesystem image, conversions, digests.

The disk is one ext4 filesystem with no partition table, labelled
``xwvm-root`` (the kernel finds it with ``root=LABEL=xwvm-root``), made with
``mke2fs -d`` without mounting anything. Timestamps, the UUID and the hash
seed come from the inputs, so equal inputs give near-equal images.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

from xwvm.client.imagebuild.spec import ROOT_LABEL
from xwvm.errors import XwvmError

#: qemu-img's name for each disk format it writes, and the options we write it with.
CONVERT_OPTIONS = {
    "qcow2": ["-O", "qcow2", "-o", "compat=1.1"],
    "vdi": ["-O", "vdi", "-o", "static=off"],
    "vmdk": ["-O", "vmdk", "-o", "subformat=monolithicSparse"],
}


class ImageError(XwvmError):
    """A disk-image tool failed; the message carries its error output."""

    status, code = 500, "image_build_failed"


def make_ext4(rootfs: Path, raw: Path, size_mb: int, seed: str, epoch: int) -> None:
    """Write ``rootfs`` as a sparse raw ext4 image of ``size_mb`` MiB labelled ``xwvm-root``."""
    fs_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"xwvm-template:{seed}"))
    raw.unlink(missing_ok=True)
    with raw.open("wb") as f:
        f.truncate(size_mb * 1024 * 1024)
    run(["mke2fs", "-q", "-F", "-t", "ext4", "-L", ROOT_LABEL, "-U", fs_uuid, "-m", "1",
         "-E", f"hash_seed={fs_uuid},root_owner=0:0", "-d", str(rootfs), str(raw)],
        env={"E2FSPROGS_FAKE_TIME": str(epoch)})
    # -n: check only. A filesystem that fails here would fail the guest's boot later.
    run(["e2fsck", "-f", "-n", str(raw)])


def convert(raw: Path, out: Path, fmt: str) -> None:
    out.unlink(missing_ok=True)
    run(["qemu-img", "convert", "-f", "raw", *CONVERT_OPTIONS[fmt], str(raw), str(out)])


def info(path: Path) -> dict[str, Any]:
    """``qemu-img info`` as a mapping (``format``, ``virtual-size``, ``actual-size``...)."""
    return json.loads(run(["qemu-img", "info", "--output=json", str(path)]))


def run(cmd: list[str], env: dict[str, str] | None = None) -> str:
    """Run a tool, returning its output; raise ``ImageError`` with its stderr if it fails."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                              env={**os.environ, **(env or {})})
    except FileNotFoundError as exc:
        raise ImageError(f"{cmd[0]} is not installed (scripts/install-system.sh installs it)"
                         ) from exc
    if proc.returncode != 0:
        raise ImageError(f"{' '.join(cmd[:2])} failed ({proc.returncode}): "
                         f"{(proc.stderr or proc.stdout).strip()[-2000:]}")
    return proc.stdout
