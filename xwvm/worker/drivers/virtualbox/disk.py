"""Disks for VirtualBox: the template opened read-only as an immutable medium, one
differencing VDI per job over it, the job's exchange disk, and a tiny VDI
writer/reader for the probe guest.

The template is opened with AccessMode ReadOnly and made Immutable: VirtualBox never
writes it, and any number of jobs may have children of it at once. We create each job's
differencing image ourselves (IMedium.createDiffStorage into the VM's folder) rather
than let VirtualBox make an implicit one when an immutable disk is attached: that way
the file's place and name are ours, destroy() deletes it, and a restarted worker finds
it by its folder.

VirtualBox guesses a medium's format from its bytes, and a VMDK descriptor names its
extent files (and a parent) by path: :func:`check_template_file` lets only a VDI that is
not a differencing image, or a VMDK whose extents are the file itself or files beside it,
reach ``openMedium`` (a crafted template must not make VirtualBox read a host file).
"""

from __future__ import annotations

import os
import re
import struct
import uuid
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xwvm.worker.drivers.errors import DriverError, SpecError
from xwvm.worker.drivers.virtualbox.host import Host

VDI_TEXT = b"<<< Oracle VM VirtualBox Disk Image >>>\n"
VDI_SIGNATURE = 0xBEDA107F
VDI_BLOCK = 1 << 20
VDI_FREE = 0xFFFFFFFF
VDI_TYPE_DIFF = 4
VMDK_SPARSE_MAGIC = b"KDMV"
VMDK_DESCRIPTOR = b"# Disk DescriptorFile"
VMDK_DESCRIPTOR_MAX = 64 * 1024
# An extent line: access, sectors, type, then "file name" and an offset for file extents.
VMDK_EXTENT_RE = re.compile(r'^\s*(RW|RDONLY|NOACCESS)\s+\d+\s+(\w+)(?:\s+"([^"]*)")?',
                            re.MULTILINE)


def write_vdi(path: Path, size: int, sector0: bytes) -> None:
    """A dynamic VDI 1.1 image of ``size`` bytes whose first block starts with ``sector0``
    (the probe guest's disk; qemu-img reads these, a test checks it)."""
    blocks = (size + VDI_BLOCK - 1) // VDI_BLOCK
    off_blocks = 0x200
    off_data = (off_blocks + 4 * blocks + 511) // 512 * 512
    head = bytearray(0x200)
    head[:len(VDI_TEXT)] = VDI_TEXT
    struct.pack_into("<IIIII", head, 0x40, VDI_SIGNATURE, 0x00010001, 0x190, 1, 0)
    struct.pack_into("<II", head, 0x154, off_blocks, off_data)
    struct.pack_into("<I", head, 0x168, 512)
    struct.pack_into("<QIIII", head, 0x170, size, VDI_BLOCK, 0, blocks, 1)
    head[0x188:0x198] = uuid.uuid4().bytes_le
    head[0x198:0x1A8] = uuid.uuid4().bytes_le
    with path.open("wb") as f:
        f.write(head)
        f.seek(off_blocks)
        f.write(struct.pack(f"<{blocks}I", 0, *([VDI_FREE] * (blocks - 1))))
        f.seek(off_data)
        f.write(sector0.ljust(VDI_BLOCK, b"\0"))


def has_boot_sector(path: Path) -> bool | None:
    """Whether a VDI template's first sector ends with the BIOS boot signature; None when
    the file is not a VDI this reader knows (VMDK...): VirtualBox will tell."""
    try:
        with path.open("rb") as f:
            head = f.read(0x200)
            if len(head) < 0x1D8 or struct.unpack_from("<I", head, 0x40)[0] != VDI_SIGNATURE:
                return None
            off_blocks, off_data = struct.unpack_from("<II", head, 0x154)
            block = struct.unpack_from("<I", head, 0x178)[0]
            f.seek(off_blocks)
            (index,) = struct.unpack("<I", f.read(4))
            if index >= 0xFFFFFFFE:
                return False
            f.seek(off_data + index * block + 510)
            return f.read(2) == b"\x55\xaa"
    except (OSError, struct.error):
        return None


@dataclass(frozen=True)
class FlatVMDK:
    """A ``monolithicFlat`` VMDK descriptor: one raw extent file, read and written in
    place. VirtualBox attaches VMDK but not raw hard disks; the descriptor lets it use the
    worker's raw exchange disk unchanged (qemu-img reads it too: a test checks it)."""

    extent: str          # the raw file's name, relative to the descriptor's folder
    size: int            # bytes, a multiple of 512
    image_uuid: str

    def render(self) -> str:
        sectors = self.size // 512
        lines = ["# Disk DescriptorFile", "version=1", "CID=fffffffe", "parentCID=ffffffff",
                 'createType="monolithicFlat"', "", "# Extent description",
                 f'RW {sectors} FLAT "{self.extent}" 0', "", "# The Disk Data Base", "#DDB"]
        ddb = {"ddb.virtualHWVersion": "4", "ddb.adapterType": "ide",
               "ddb.geometry.cylinders": str(min(sectors // (16 * 63), 16383)),
               "ddb.geometry.heads": "16", "ddb.geometry.sectors": "63",
               "ddb.uuid.image": self.image_uuid,
               "ddb.uuid.parent": "00000000-0000-0000-0000-000000000000"}
        lines += [f'{key} = "{value}"' for key, value in ddb.items()]
        return "\n".join(lines) + "\n"


def open_exchange(host: Host, raw: Path, vm_dir: Path) -> Any:
    """The exchange disk as a read-write medium, through a flat VMDK in the VM's folder.

    The extent is a hard link to the worker's file: when destroy() lets VirtualBox delete
    the VM's media (descriptor and extent), the worker's own name for the data remains."""
    if raw.stat().st_size % 512:
        raise SpecError(f"exchange disk {raw} is not a whole number of sectors")
    extent = vm_dir / "exchange-flat.vmdk"
    try:
        os.link(raw, extent)
    except OSError as e:
        raise DriverError(f"cannot link the exchange disk into {vm_dir}: {e.strerror} "
                          "(it must be on the same filesystem as the work dir)") from e
    descriptor = vm_dir / "exchange.vmdk"
    descriptor.write_text(FlatVMDK(extent.name, raw.stat().st_size,
                                   str(uuid.uuid4())).render())
    c = host.c
    with host.translated(f"open exchange disk {descriptor}"):
        return host.vbox.openMedium(str(descriptor), c.DeviceType_HardDisk,
                                    c.AccessMode_ReadWrite, False)


def check_template_file(path: Path) -> None:
    """Refuse a template that would make VirtualBox open anything but itself (and, for a
    VMDK descriptor, extents beside it): a differencing VDI, a VMDK with a parent or an
    extent elsewhere, or any other format (VHD, qcow2... whose headers name parents)."""
    try:
        with path.open("rb") as f:
            head = f.read(VMDK_DESCRIPTOR_MAX)
            if head[:4] == VMDK_SPARSE_MAGIC and len(head) >= 44:
                offset, size = struct.unpack_from("<QQ", head, 28)  # in sectors
                f.seek(offset * 512)
                text = f.read(min(size * 512, VMDK_DESCRIPTOR_MAX)) if offset else b""
                return _check_vmdk(path, text, sparse=True)
    except (OSError, struct.error) as e:
        raise SpecError(f"template {path.name} is unreadable") from e
    if head.startswith(VMDK_DESCRIPTOR):
        return _check_vmdk(path, head, sparse=False)
    if len(head) >= 0x50 and struct.unpack_from("<I", head, 0x40)[0] == VDI_SIGNATURE:
        if struct.unpack_from("<I", head, 0x4C)[0] == VDI_TYPE_DIFF:
            raise SpecError(f"template {path.name} refused: a differencing VDI needs a "
                            "parent image", code="template_refused")
        return None
    raise SpecError(f"template {path.name} refused: not a VDI or VMDK image",
                    code="template_refused")


def _check_vmdk(path: Path, raw: bytes, sparse: bool) -> None:
    text = raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")
    if re.search(r"^\s*parentFileNameHint\s*=", text, re.MULTILINE):
        raise SpecError(f"template {path.name} refused: its VMDK descriptor names a parent "
                        "image", code="template_refused")
    folder = path.resolve().parent
    extents = [(kind, name) for _access, kind, name in VMDK_EXTENT_RE.findall(text)
               if kind.upper() != "ZERO"]
    if sparse:  # its one extent is the file itself, whatever the descriptor calls it
        if len(extents) != 1:
            raise SpecError(f"template {path.name} refused: a sparse VMDK with "
                            f"{len(extents)} extents", code="template_refused")
        return
    for _kind, name in extents:
        if not name or "/" in name or "\\" in name or name in (".", "..") or \
                (folder / name).resolve().parent != folder:
            raise SpecError(f"template {path.name} refused: its VMDK descriptor names an "
                            "extent outside the image cache", code="template_refused")


def open_template(host: Host, path: Path) -> Any:
    """The template as an immutable, read-only medium (the same object for every job),
    once :func:`check_template_file` found it self-contained."""
    check_template_file(path)
    c = host.c
    with host.translated(f"open template {path}"):
        medium = host.vbox.openMedium(str(path), c.DeviceType_HardDisk, c.AccessMode_ReadOnly,
                                      False)
        if medium.type != c.MediumType_Immutable:
            medium.type = c.MediumType_Immutable
    return medium


def create_diff(host: Host, template: Any, path: Path, size: int) -> Any:
    """A differencing VDI at ``path`` over ``template``, grown to ``size`` bytes."""
    c = host.c
    with host.translated(f"create differencing disk {path}"):
        diff = host.vbox.createMedium("VDI", str(path), c.AccessMode_ReadWrite,
                                      c.DeviceType_HardDisk)
        progress = template.createDiffStorage(diff, [c.MediumVariant_Diff])
    host.wait(progress, f"create differencing disk {path}")
    if size > int(template.logicalSize):
        with host.translated(f"resize {path}"):
            progress = diff.resize(size)
        host.wait(progress, f"resize {path}")
    return diff


def template_size(template: Any, host: Host) -> int:
    with host.translated("template size"):
        return int(template.logicalSize)


def forget_under(host: Host, folder: Path) -> None:
    """Delete or close every registered medium whose file is inside ``folder`` (a VM's
    folder), children first; a parent left without children is closed when it lies
    inside ``folder`` too (the probe's template). Best effort: never raises."""
    try:
        vbox = host.vbox
        roots = [*vbox.hardDisks, *vbox.DVDImages]
    except DriverError:
        return
    except Exception:
        return
    parents: list[Any] = []
    for medium in roots:
        _forget_tree(host, medium, folder, parents)
    for parent in parents:  # a template that no job uses any more
        release_template(host, parent)


def _forget_tree(host: Host, medium: Any, folder: Path, parents: list[Any]) -> None:
    with suppress(Exception):
        for child in list(medium.children):
            _forget_tree(host, child, folder, parents)
        if not _inside(Path(medium.location), folder):
            return
        parent = medium.parent
        if parent is not None and not _inside(Path(parent.location), folder):
            parents.append(parent)
        if medium.deviceType == host.c.DeviceType_HardDisk and not medium.readOnly:
            host.wait(medium.deleteStorage(), f"delete {medium.location}")
        else:
            medium.close()


def release_template(host: Host, template: Any) -> None:
    """Close the template's medium once no job's disk hangs off it, so that VirtualBox does
    not keep a file the image cache may evict (best effort). Only an immutable, read-only
    medium (as open_template leaves it) is closed."""
    with suppress(Exception):
        c = host.c
        if template.type == c.MediumType_Immutable and template.readOnly and \
                not list(template.children) and not list(template.machineIds):
            template.close()


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True
