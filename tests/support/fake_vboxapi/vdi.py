"""The FAKE VirtualBox's VDI reading and writing: header, block map, the first sector.

Enough of the VDI 1.1 format for the fake to do what VirtualBox does with the files the
driver hands it: read a medium's logical size, read the boot sector through a chain of
differencing images, write a differencing image (a header and an empty block map).
qemu-img reads the files written here (tests check it), so they are real VDIs.
"""

from __future__ import annotations

import struct
import uuid
from pathlib import Path

PREHEADER_TEXT = b"<<< Oracle VM VirtualBox Disk Image >>>\n"
SIGNATURE = 0xBEDA107F
VERSION = 0x00010001
HEADER_SIZE = 0x190
TYPE_NORMAL, TYPE_FIXED, TYPE_DIFF = 1, 2, 4
BLOCK = 1 << 20
FREE = 0xFFFFFFFF


class NotVDI(ValueError):
    pass


def read_header(path: Path) -> dict[str, object]:
    with path.open("rb") as f:
        head = f.read(0x200)
    if len(head) < 0x1D8 or struct.unpack_from("<I", head, 0x40)[0] != SIGNATURE:
        raise NotVDI(f"{path} is not a VDI image")
    return {
        "type": struct.unpack_from("<I", head, 0x4C)[0],
        "off_blocks": struct.unpack_from("<I", head, 0x154)[0],
        "off_data": struct.unpack_from("<I", head, 0x158)[0],
        "size": struct.unpack_from("<Q", head, 0x170)[0],
        "block": struct.unpack_from("<I", head, 0x178)[0],
        "blocks": struct.unpack_from("<I", head, 0x180)[0],
        "uuid": str(uuid.UUID(bytes_le=head[0x188:0x198])),
        "parent": str(uuid.UUID(bytes_le=head[0x1A8:0x1B8])),
    }


def read_sector0(path: Path) -> bytes | None:
    """The first 512 bytes if this image holds them, None if its block 0 is unallocated
    (then they are the parent's)."""
    h = read_header(path)
    with path.open("rb") as f:
        f.seek(int(h["off_blocks"]))  # type: ignore[call-overload]
        (index,) = struct.unpack("<I", f.read(4))
        if index >= 0xFFFFFFFE:
            return None if index == FREE else bytes(512)
        f.seek(int(h["off_data"]) + index * int(h["block"]))  # type: ignore[call-overload]
        return f.read(512).ljust(512, b"\0")


def write(path: Path, size: int, *, sector0: bytes | None = None, diff_of: str | None = None,
          image_uuid: str | None = None) -> str:
    """Write a dynamic VDI of ``size`` bytes (block 0 = ``sector0`` if given), or a
    differencing one over the image with uuid ``diff_of``. Returns the new image's uuid."""
    blocks = (size + BLOCK - 1) // BLOCK
    off_blocks = 0x200
    off_data = (off_blocks + 4 * blocks + 511) // 512 * 512
    new_uuid = image_uuid or str(uuid.uuid4())
    head = bytearray(0x200)
    head[: len(PREHEADER_TEXT)] = PREHEADER_TEXT
    struct.pack_into("<IIIII", head, 0x40, SIGNATURE, VERSION, HEADER_SIZE,
                     TYPE_DIFF if diff_of else TYPE_NORMAL, 0)
    struct.pack_into("<II", head, 0x154, off_blocks, off_data)
    struct.pack_into("<I", head, 0x168, 512)  # legacy geometry: bytes per sector
    struct.pack_into("<QIIII", head, 0x170, size, BLOCK, 0, blocks, 1 if sector0 else 0)
    head[0x188:0x198] = uuid.UUID(new_uuid).bytes_le
    head[0x198:0x1A8] = uuid.uuid4().bytes_le
    if diff_of:
        head[0x1A8:0x1B8] = uuid.UUID(diff_of).bytes_le
    bmap = [FREE] * blocks
    if sector0 is not None:
        bmap[0] = 0
    with path.open("wb") as f:
        f.write(head)
        f.seek(off_blocks)
        f.write(struct.pack(f"<{blocks}I", *bmap))
        f.seek(off_data)
        if sector0 is not None:
            f.write(sector0.ljust(BLOCK, b"\0"))
        else:
            f.truncate(off_data)
    return new_uuid


def set_size(path: Path, size: int) -> None:
    """Grow a fresh (nothing written yet) image's logical size, as IMedium::resize does."""
    h = read_header(path)
    with path.open("rb") as f:
        f.seek(int(h["off_blocks"]))  # type: ignore[call-overload]
        raw = f.read(4 * int(h["blocks"]))  # type: ignore[call-overload]
    if any(i != FREE for i in struct.unpack(f"<{len(raw) // 4}I", raw)):
        raise ValueError("the fake resizes only images with no block written")
    parent = str(h["parent"])
    write(path, size, diff_of=parent if h["type"] == TYPE_DIFF else None,
          image_uuid=str(h["uuid"]))
