"""The appliance's initramfs writer on a scratch root file system: module order from
modules.dep, a static busybox required, deterministic bytes, and an archive that cpio
(the real reader) unpacks with the right names, modes and links."""

from __future__ import annotations

import gzip
import shutil
import subprocess
from pathlib import Path

import pytest

from xwvm.client.imagebuild import initramfs

STATIC_BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static (install-vm-host.sh)
VERSION = "6.1.0-test-cloud-amd64"


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    shutil.copyfile(STATIC_BUSYBOX, root / "bin" / "busybox")
    mods = root / "lib" / "modules" / VERSION
    for rel in ("kernel/drivers/virtio/virtio_pci.ko", "kernel/drivers/block/virtio_blk.ko",
                "kernel/drivers/cdrom/cdrom.ko", "kernel/drivers/scsi/sr_mod.ko",
                "kernel/drivers/virtio/virtio_pci_legacy_dev.ko",
                "kernel/drivers/virtio/virtio_pci_modern_dev.ko"):
        (mods / rel).parent.mkdir(parents=True, exist_ok=True)
        (mods / rel).write_bytes(f"module {rel}".encode())
    (mods / "modules.dep").write_text(
        "kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko"
        " kernel/drivers/virtio/virtio_pci_modern_dev.ko\n"
        "kernel/drivers/virtio/virtio_pci_legacy_dev.ko:\n"
        "kernel/drivers/virtio/virtio_pci_modern_dev.ko:\n"
        "kernel/drivers/block/virtio_blk.ko:\n"
        "kernel/drivers/cdrom/cdrom.ko:\n"
        "kernel/drivers/scsi/sr_mod.ko: kernel/drivers/cdrom/cdrom.ko\n")
    return root


def test_archive_unpacks_with_cpio(rootfs: Path, tmp_path: Path) -> None:
    dest = tmp_path / "initrd.img"
    loaded = initramfs.build(rootfs, VERSION, ("virtio_pci", "virtio-blk", "sr_mod", "ext4"),
                             dest)
    # dependencies first; ext4 is built into the kernel (not in modules.dep): skipped
    assert loaded == ["virtio_pci_legacy_dev.ko", "virtio_pci_modern_dev.ko",
                      "virtio_pci.ko", "virtio_blk.ko", "cdrom.ko", "sr_mod.ko"]
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["cpio", "-id", "--quiet"], input=gzip.decompress(dest.read_bytes()),
                   cwd=out, check=True)
    assert (out / "etc/modules.load").read_text().split() == loaded
    assert (out / "lib/modules/cdrom.ko").read_bytes() == \
        b"module kernel/drivers/cdrom/cdrom.ko"
    assert (out / "init").read_bytes() == initramfs.INIT_SCRIPT.read_bytes()
    assert (out / "init").stat().st_mode & 0o777 == 0o755
    assert (out / "bin/sh").is_symlink() and (out / "bin/sh").readlink() == Path("busybox")
    assert (out / "bin/busybox").read_bytes() == STATIC_BUSYBOX.read_bytes()
    for folder in ("dev", "proc", "sys", "root"):
        assert (out / folder).is_dir()


def test_same_rootfs_same_bytes(rootfs: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a.img", tmp_path / "b.img"
    initramfs.build(rootfs, VERSION, ("sr_mod",), a)
    initramfs.build(rootfs, VERSION, ("sr_mod",), b)
    assert a.read_bytes() == b.read_bytes()


def test_a_dynamic_busybox_is_refused(rootfs: Path, tmp_path: Path) -> None:
    shutil.copyfile("/bin/ls", rootfs / "bin" / "busybox")  # has a program interpreter
    with pytest.raises(initramfs.InitramfsError, match="busybox-static"):
        initramfs.build(rootfs, VERSION, ("sr_mod",), tmp_path / "x.img")
    assert not (tmp_path / "x.img").exists()


def test_dependency_loops_are_refused(rootfs: Path, tmp_path: Path) -> None:
    dep = rootfs / "lib" / "modules" / VERSION / "modules.dep"
    dep.write_text("a.ko: b.ko\nb.ko: a.ko\n")
    with pytest.raises(initramfs.InitramfsError, match="loop"):
        initramfs.build(rootfs, VERSION, ("a",), tmp_path / "x.img")
