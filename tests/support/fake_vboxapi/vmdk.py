"""What the FAKE VirtualBox reads of a VMDK descriptor: its size, UUID and extent files.

Only the text descriptor of ``monolithicFlat`` images (the form the driver writes for a
job's exchange disk); VirtualBox's own VMDK backend reads the same lines. Extent paths
are relative to the descriptor's folder, as the VMDK specification says.
"""

from __future__ import annotations

import re
from pathlib import Path

DESCRIPTOR_MAGIC = b"# Disk DescriptorFile"
_EXTENT = re.compile(r'^(RW|RDONLY|NOACCESS)\s+(\d+)\s+(FLAT|SPARSE|ZERO|VMFS)\s+"([^"]+)"')
_DDB = re.compile(r'^(ddb\.[A-Za-z.]+)\s*=\s*"([^"]*)"')


class NotVMDK(ValueError):
    pass


def is_descriptor(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(len(DESCRIPTOR_MAGIC)) == DESCRIPTOR_MAGIC


def read_descriptor(path: Path) -> tuple[int, str, list[Path]]:
    """(size in bytes, image UUID, extent files); NotVMDK when it is not one."""
    if not is_descriptor(path):
        raise NotVMDK(f"{path} is not a VMDK descriptor")
    size, ddb, extents = 0, {}, []
    for line in path.read_text().splitlines():
        if m := _EXTENT.match(line):
            size += int(m.group(2)) * 512
            extents.append(path.parent / m.group(4))
        elif m := _DDB.match(line):
            ddb[m.group(1)] = m.group(2)
    if not extents:
        raise NotVMDK(f"{path} names no extent")
    missing = [str(e) for e in extents if not e.is_file()]
    if missing:
        raise FileNotFoundError(", ".join(missing))
    return size, ddb.get("ddb.uuid.image", ""), extents
