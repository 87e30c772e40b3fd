"""Hostile template images: a signed-but-crafted (or substituted) disk must not make the
worker open a host file or connect into the LAN (issue 13, hole 9).

The images are made by the real qemu-img; the worker's real overlay path (the libvirt
driver's prepare_disk over libvirt's test driver) and the VirtualBox template check run on
them. A listener on 127.0.0.2 stands in for a LAN host.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from xwvm.worker.drivers.base import VMSpec
from xwvm.worker.drivers.errors import SpecError
from xwvm.worker.drivers.virtualbox import disk as vbox_disk


@pytest.fixture(autouse=True)
def _qemu_img() -> None:
    """Not a skip: scripts/install-system.sh installs qemu-utils."""
    assert shutil.which("qemu-img"), "qemu-img missing: run scripts/install-system.sh"
LAN = ("127.0.0.2", 10809)


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def driver(tmp_path: Path) -> object:
    from xwvm.worker.drivers import libvirt as libvirt_driver  # libvirt-python: a dependency
    return libvirt_driver.LibvirtDriver("w1", tmp_path / "work", uri="test:///default")


@pytest.fixture
def lan_listener() -> Iterator[list[tuple[str, int]]]:
    """Accepts (and records) every connection to the stand-in LAN host."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(LAN)  # any 127/8 address is this machine's: a failure here is a real one
    sock.listen(8)
    sock.settimeout(0.2)
    seen: list[tuple[str, int]] = []
    done = threading.Event()

    def accept() -> None:
        while not done.is_set():
            try:
                conn, addr = sock.accept()
            except OSError:
                continue
            seen.append(addr)
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield seen
    done.set()
    thread.join()
    sock.close()


def assert_refused(driver: object, template: Path, fmt: str, words: str) -> None:
    spec = VMSpec("job1", "w1", template.resolve(), base_format=fmt)
    with pytest.raises(SpecError) as err:
        driver.prepare_disk(spec)  # type: ignore[attr-defined]
    assert words in err.value.message
    assert not driver._vm_dir("job1").exists()  # type: ignore[attr-defined]  # no overlay left


def test_qcow2_backed_by_a_host_file_is_refused(driver: object, tmp_path: Path) -> None:
    evil = tmp_path / "evil.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw", str(evil))
    assert_refused(driver, evil, "qcow2", "names a backing file")


def test_qcow2_backed_by_shadow_is_refused(driver: object, tmp_path: Path) -> None:
    assert Path("/etc/shadow").exists()  # Debian has one
    evil = tmp_path / "evil.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", "/etc/shadow", "-F", "raw", str(evil),
             "1M")
    assert_refused(driver, evil, "qcow2", "names a backing file")


def test_qcow2_backed_by_nbd_on_the_lan_is_refused_without_connecting(
        driver: object, tmp_path: Path, lan_listener: list[tuple[str, int]]) -> None:
    evil = tmp_path / "evil-nbd.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", f"nbd://{LAN[0]}:{LAN[1]}/x", "-F",
             "raw", str(evil), "1M")
    assert_refused(driver, evil, "qcow2", "names a backing file")
    assert lan_listener == []


def test_qcow2_with_an_external_data_file_is_refused(
        driver: object, tmp_path: Path) -> None:
    evil = tmp_path / "evil-data.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", f"data_file={tmp_path / 'outside.raw'}",
             str(evil), "1M")
    assert_refused(driver, evil, "qcow2", "external data file")


def test_a_qcow2_posing_as_raw_is_only_read_as_raw(driver: object, tmp_path: Path) -> None:
    """The overlay states the backing format: a qcow2 declared raw is never probed as qcow2
    (its backing header stays inert bytes)."""
    evil = tmp_path / "evil.img"
    qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", "/etc/passwd", "-F", "raw", str(evil),
             "1M")
    spec = VMSpec("job1", "w1", evil.resolve(), base_format="raw")
    overlay = driver.prepare_disk(spec)  # type: ignore[attr-defined]
    info = subprocess.run(["qemu-img", "info", "-U", "--backing-chain", "--output=json",
                           str(overlay)], capture_output=True, text=True, check=True).stdout
    assert "/etc/passwd" not in info
    assert '"backing-filename-format": "raw"' in info


def test_a_clean_qcow2_template_gets_an_overlay(driver: object, tmp_path: Path) -> None:
    good = tmp_path / "good.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(good), "1M")
    overlay = driver.prepare_disk(VMSpec("job1", "w1", good.resolve()))  # type: ignore
    assert overlay.is_file()


# --- VirtualBox: VMDK descriptors name their extents ------------------------------------

def vmdk_descriptor(extent: str, extra: str = "") -> str:
    return ("# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
            f'createType="monolithicFlat"\n{extra}\n# Extent description\n'
            f'RW 2048 FLAT "{extent}" 0\n\n# The Disk Data Base\n#DDB\n'
            'ddb.virtualHWVersion = "4"\n')


@pytest.mark.parametrize("extent", ["/etc/shadow", "../../etc/shadow", "sub/../../x.raw"])
def test_vmdk_extent_outside_the_cache_is_refused(tmp_path: Path, extent: str) -> None:
    cache = tmp_path / "images" / "blobs"
    cache.mkdir(parents=True)
    template = cache / ("a" * 64)
    template.write_text(vmdk_descriptor(extent))
    with pytest.raises(SpecError) as err:
        vbox_disk.check_template_file(template)
    assert "outside" in err.value.message
    assert extent not in err.value.message  # the image's own words are not echoed


def test_vmdk_with_a_parent_is_refused(tmp_path: Path) -> None:
    template = tmp_path / "t.vmdk"
    (tmp_path / "t-flat.vmdk").write_bytes(b"\0" * 2048 * 512)
    template.write_text(vmdk_descriptor("t-flat.vmdk", 'parentFileNameHint="/etc/shadow"'))
    with pytest.raises(SpecError, match="parent"):
        vbox_disk.check_template_file(template)


def test_vmdk_made_by_qemu_img_and_a_vdi_pass(tmp_path: Path) -> None:
    sparse = tmp_path / "t.vmdk"
    qemu_img("create", "-q", "-f", "vmdk", str(sparse), "1M")
    vbox_disk.check_template_file(sparse)
    vdi = tmp_path / "t.vdi"
    vbox_disk.write_vdi(vdi, 1 << 20, b"\x55\xaa")
    vbox_disk.check_template_file(vdi)


def test_vmdk_descriptor_with_its_extent_beside_it_passes(tmp_path: Path) -> None:
    (tmp_path / "t-flat.vmdk").write_bytes(b"\0" * 2048 * 512)
    template = tmp_path / "t.vmdk"
    template.write_text(vmdk_descriptor("t-flat.vmdk"))
    vbox_disk.check_template_file(template)


def test_other_formats_are_refused_for_virtualbox(tmp_path: Path) -> None:
    """VirtualBox guesses a medium's format from its bytes: a qcow2 or VHD (whose headers
    may name parents) is not handed to it."""
    evil = tmp_path / "t.vdi"
    qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", "/etc/shadow", "-F", "raw", str(evil),
             "1M")
    with pytest.raises(SpecError, match="not a VDI or VMDK"):
        vbox_disk.check_template_file(evil)
