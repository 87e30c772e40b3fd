"""A real small filesystem for disk-full tests: a tmpfs mounted (as root) over a folder,
and a filler file that leaves exactly as much room as a test wants."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

BLOCK = 64 * 1024


@contextlib.contextmanager
def tmpfs(path: Path, size_kib: int, owner: tuple[int, int] | None = None) -> Iterator[Path]:
    """``path`` (created if missing) is a tmpfs of ``size_kib`` KiB inside the block; what
    the folder held before is hidden meanwhile and there again after."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size_kib}k,mode=0700"
    if owner is not None:
        opts += f",uid={owner[0]},gid={owner[1]}"
    subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=False)


def free(path: Path) -> int:
    """Bytes an unprivileged writer may still write on ``path``'s filesystem."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(path: Path, leave: int = 0) -> Path:
    """Write ``path/filler`` until the disk is full, then give back ``leave`` bytes (whole
    pages: the room left is ``leave`` rounded down to the page size); the filler."""
    filler = path / "filler"
    with open(filler, "ab", buffering=0) as f:
        for block in (BLOCK, 4096, 1):
            with contextlib.suppress(OSError):  # ENOSPC: this block size fits no more
                while True:
                    f.write(b"\0" * block)
    page = os.sysconf("SC_PAGE_SIZE")
    os.truncate(filler, max(filler.stat().st_size - (leave // page) * page, 0))
    assert abs(free(path) - (leave // page) * page) <= page, (free(path), leave)
    return filler
