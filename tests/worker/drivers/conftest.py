"""Fixtures for the driver tests: a real libvirt/QEMU host, the tiny test guest, drivers.

The session first runs scripts/install-vm-host.sh (idempotent: installs QEMU and
libvirt if missing, starts the daemons). QEMU runs as libvirt-qemu, which cannot enter
pytest's 0700 tmp folders, so VM files live under a 0711 folder in /var/tmp.

The VirtualBox driver runs against a FAKE of vboxapi (tests/support/fake_vboxapi):
VirtualBox cannot run on these machines. Its template is a VDI, its "guest" a fake one
whose script sits in the disk's first sector; it needs none of the libvirt fixtures.
Tests that need a real guest take ``LIBVIRT_ONLY``.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import fake_vboxapi
from tests.support.fake_vboxapi import vdi
from tests.support.fake_vboxapi.guest import fake_guest_sector
from tests.support.guest import Guest, Kernel, build_guest, fetch_kernel
from xwvm.worker.drivers import Driver, VMSpec
from xwvm.worker.drivers.libvirt import LibvirtDriver
from xwvm.worker.drivers.virtualbox import VirtualBoxDriver

REPO = Path(__file__).resolve().parents[3]
DRIVERS = ["libvirt", "virtualbox"]  # virtualbox: against a FAKE of vboxapi
# For tests that boot a real guest (console markers, the network seen from inside).
LIBVIRT_ONLY = pytest.mark.parametrize("driver_kind", ["libvirt"])
_ids = itertools.count()


@dataclass(frozen=True)
class FakeGuest:
    """The fake VirtualBox's test guest: a VDI whose first sector holds the script (no
    direct kernel boot in VirtualBox)."""

    disk: Path
    kernel: None = None
    initrd: None = None
    cmdline: None = None


@pytest.fixture(scope="session")
def vm_host() -> None:
    script = REPO / "scripts" / "install-vm-host.sh"
    proc = subprocess.run([str(script)], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        pytest.fail("the VM host is not ready: run `sudo ./scripts/install-vm-host.sh` "
                    f"(exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}", pytrace=False)


@pytest.fixture(scope="session")
def vm_root(vm_host: None) -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="xwvm-drivers-", dir="/var/tmp"))
    root.chmod(0o711)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def kernel(vm_host: None) -> Kernel:
    """The test guest's kernel, also the drivers' probe kernel (as the appliance's would be)."""
    k = fetch_kernel()
    os.environ["XWVM_PROBE_KERNEL"] = str(k.vmlinuz)
    return k


@pytest.fixture(scope="session")
def qcow2_template(vm_root: Path) -> Path:
    """A 64 MiB qcow2 template, readable by the QEMU user, as the worker's cache holds."""
    tdir = vm_root / "templates"
    tdir.mkdir()
    tdir.chmod(0o755)
    path = tdir / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "64M"], check=True)
    path.chmod(0o644)
    return path


@pytest.fixture
def template(driver_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """The driver's 64 MiB template: qcow2 for libvirt, a blank VDI for VirtualBox (the
    fake VM boots it to "no bootable medium" and runs until stopped)."""
    if driver_kind == "libvirt":
        return Path(request.getfixturevalue("qcow2_template"))
    path = tmp_path / "templates" / "base.vdi"
    path.parent.mkdir()
    vdi.write(path, 64 << 20)
    return path


@pytest.fixture
def make_guest(driver_kind: str, request: pytest.FixtureRequest,
               tmp_path: Path) -> Callable[[str], Guest | FakeGuest]:
    """Build a test guest whose /init runs ``script`` (for VirtualBox: a fake guest that
    runs its echo/sleep lines, see tests/support/fake_vboxapi/guest.py)."""
    if driver_kind == "virtualbox":
        def make_fake(script: str) -> FakeGuest:
            path = tmp_path / f"guest{next(_ids)}.vdi"
            vdi.write(path, 64 << 20, sector0=fake_guest_sector(script))
            return FakeGuest(path)
        return make_fake
    vm_root: Path = request.getfixturevalue("vm_root")
    kernel: Kernel = request.getfixturevalue("kernel")

    def make(script: str) -> Guest:
        gdir = vm_root / "guests"
        gdir.mkdir(exist_ok=True)
        gdir.chmod(0o755)
        return build_guest(script, gdir, kernel=kernel, name=f"g{next(_ids)}")
    return make


def new_driver(kind: str, worker_id: str, work_dir: Path) -> Driver:
    if kind == "libvirt":
        return LibvirtDriver(worker_id, work_dir)
    if kind == "virtualbox":
        return VirtualBoxDriver(worker_id, work_dir, api=fake_vboxapi)
    raise AssertionError(kind)


@pytest.fixture
def fake_vbox() -> Iterator[fake_vboxapi.FakeService]:
    """A running fake VirtualBox (VBoxSVC) for this test."""
    svc = fake_vboxapi.start_service()
    yield svc
    fake_vboxapi.stop_service()


@pytest.fixture(params=DRIVERS)
def driver_kind(request: pytest.FixtureRequest) -> str:
    if request.param == "virtualbox":
        request.getfixturevalue("fake_vbox")
    return str(request.param)


@pytest.fixture
def work_dir(driver_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    if driver_kind == "virtualbox":
        path = tmp_path / "work"
        path.mkdir()
        return path
    vm_root: Path = request.getfixturevalue("vm_root")
    request.getfixturevalue("kernel")
    path = vm_root / f"work{next(_ids)}"
    path.mkdir()
    path.chmod(0o711)
    return path


@pytest.fixture
def worker_id() -> str:
    return f"t{os.getpid()}-{next(_ids)}"


@pytest.fixture
def driver(driver_kind: str, worker_id: str, work_dir: Path) -> Iterator[Driver]:
    drv = new_driver(driver_kind, worker_id, work_dir)
    yield drv
    drv.cleanup_leftovers()
    drv.close()


@pytest.fixture
def spec_for(driver: Driver, template: Path) -> Callable[..., VMSpec]:
    def make(job_uid: str, guest: Guest | FakeGuest | None = None, **kw: object) -> VMSpec:
        boot: dict[str, object] = {}
        if isinstance(guest, FakeGuest):
            boot = {"base_image": guest.disk}
        elif guest is not None:
            boot = {"kernel": guest.kernel, "initrd": guest.initrd, "cmdline": guest.cmdline}
        fields: dict[str, object] = {"base_image": template, "memory_mb": 192,
                                     "base_format": driver.disk_formats[0], **boot, **kw}
        return VMSpec(job_uid=job_uid, worker_id=driver.worker_id, **fields)  # type: ignore[arg-type]
    return make
