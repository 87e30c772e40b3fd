"""The appliance's own initramfs: a static busybox, a few kernel modules and a tiny /init.

Debian's initramfs-tools starts udev, probes every bus and runs its script tree: about
3 s of a 13 s boot under software emulation. The appliance knows its hardware (virtio
disk, virtio-scsi CD, virtio NIC), so its initramfs loads exactly those drivers, mounts
the root file system by label and switches to the image's init
(``appliance/initramfs-init``). Built from the image's own files (its
``/bin/busybox`` from Debian's busybox-static, its kernel's modules and modules.dep), as
a deterministic newc cpio archive (fixed times and owners, sorted), gzip'd with mtime 0:
the same rootfs gives the same bytes.
"""

from __future__ import annotations

import gzip
import io
import lzma
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path

from xwvm.client.imagebuild import sources

INIT_SCRIPT = sources.appliance_file("initramfs-init")
BUSYBOX = "bin/busybox"
PT_INTERP = 3


class InitramfsError(Exception):
    pass


@dataclass
class Cpio:
    """A newc ("070701") archive written in memory, entries in the order added."""

    mtime: int = 0
    _out: io.BytesIO = field(default_factory=io.BytesIO)
    _ino: int = 0

    def _entry(self, name: str, mode: int, data: bytes = b"") -> None:
        self._ino += 1
        fields = (self._ino, mode, 0, 0, 1, self.mtime, len(data), 0, 0, 0, 0,
                  len(name) + 1, 0)
        header = b"070701" + b"".join(b"%08X" % v for v in fields)
        self._write_padded(header + name.encode() + b"\0")
        self._write_padded(data)

    def _write_padded(self, data: bytes) -> None:
        self._out.write(data)
        self._out.write(b"\0" * (-len(data) % 4))

    def directory(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def getvalue(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self._out.getvalue()


def is_static_elf(data: bytes) -> bool:
    """An ELF64 executable without a program interpreter (statically linked)."""
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return False
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    return all(struct.unpack_from("<I", data, phoff + i * phentsize)[0] != PT_INTERP
               for i in range(phnum))


def module_order(modules_dir: Path, wanted: tuple[str, ...]) -> list[str]:
    """Paths (relative to ``modules_dir``) of ``wanted`` and their dependencies, each
    after what it depends on, from the kernel's modules.dep."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in (modules_dir / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
        by_name[_name(path)] = path
    order: list[str] = []

    def visit(path: str, seen: tuple[str, ...]) -> None:
        if path in order:
            return
        if path in seen:
            raise InitramfsError(f"module dependency loop at {path}")
        for dep in deps.get(path, []):
            visit(dep, (*seen, path))
        order.append(path)

    for name in wanted:
        path = by_name.get(name.replace("-", "_"))
        if path is None:
            continue  # built into the kernel (modules.builtin), nothing to load
        visit(path, ())
    return order


def _name(path: str) -> str:
    base = Path(path).name
    for suffix in (".xz", ".zst", ".gz"):
        base = base.removesuffix(suffix)
    return base.removesuffix(".ko").replace("-", "_")


def _module_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".xz":
        return lzma.decompress(data)
    if path.suffix in (".zst", ".gz"):
        raise InitramfsError(f"{path.name}: only .ko and .ko.xz modules are supported")
    return data


def build(rootfs: Path, kernel_version: str, modules: tuple[str, ...], dest: Path,
          mtime: int = 0) -> list[str]:
    """Write the initramfs for the kernel ``kernel_version`` of ``rootfs`` to ``dest``;
    returns the modules it loads, in order."""
    busybox = (rootfs / BUSYBOX).read_bytes()
    if not is_static_elf(busybox):
        raise InitramfsError(f"/{BUSYBOX} in the image is not statically linked (the spec "
                             "must install busybox-static)")
    modules_dir = rootfs / "lib" / "modules" / kernel_version
    order = module_order(modules_dir, modules)
    cpio = Cpio(mtime=mtime)
    for folder in ("bin", "dev", "etc", "lib", "lib/modules", "proc", "root", "sys"):
        cpio.directory(folder)
    cpio.file(BUSYBOX, busybox, 0o755)
    cpio.symlink("bin/sh", "busybox")
    names = []
    for rel in order:
        name = Path(rel).name.removesuffix(".xz")
        cpio.file(f"lib/modules/{name}", _module_bytes(modules_dir / rel))
        names.append(name)
    cpio.file("etc/modules.load", "".join(f"{n}\n" for n in names).encode())
    cpio.file("init", INIT_SCRIPT.read_bytes(), 0o755)
    dest.write_bytes(gzip.compress(cpio.getvalue(), compresslevel=6, mtime=0))
    return names
