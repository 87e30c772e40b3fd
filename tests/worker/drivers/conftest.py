"""Fixtures for the driver tests: a real libvirt/QEMU host, the tiny test guest, drivers.

The session first runs scripts/install-vm-host.sh (idempotent: installs QEMU and
libvirt if missing, starts the daemons). QEMU runs as libvirt-qemu, which cannot enter
pytest's 0700 tmp folders, so VM files live under a 0711 folder in /var/tmp.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.guest import Guest, Kernel, build_guest, fetch_kernel
from xwvm.worker.drivers import Driver, VMSpec
from xwvm.worker.drivers.libvirt import LibvirtDriver

REPO = Path(__file__).resolve().parents[3]
DRIVERS = ["libvirt"]  # the VirtualBox driver joins here, against a fake of vboxapi
_ids = itertools.count()


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
def template(vm_root: Path) -> Path:
    """A 64 MiB qcow2 template, readable by the QEMU user, as the worker's cache holds."""
    tdir = vm_root / "templates"
    tdir.mkdir()
    tdir.chmod(0o755)
    path = tdir / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "64M"], check=True)
    path.chmod(0o644)
    return path


@pytest.fixture
def make_guest(vm_root: Path, kernel: Kernel) -> Callable[[str], Guest]:
    """Build a test guest whose /init runs ``script``."""
    def make(script: str) -> Guest:
        gdir = vm_root / "guests"
        gdir.mkdir(exist_ok=True)
        gdir.chmod(0o755)
        return build_guest(script, gdir, kernel=kernel, name=f"g{next(_ids)}")
    return make


def new_driver(kind: str, worker_id: str, work_dir: Path) -> Driver:
    if kind == "libvirt":
        return LibvirtDriver(worker_id, work_dir)
    raise AssertionError(kind)


@pytest.fixture(params=DRIVERS)
def driver_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def work_dir(vm_root: Path, kernel: Kernel) -> Path:
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
    def make(job_uid: str, guest: Guest | None = None, **kw: object) -> VMSpec:
        boot: dict[str, object] = {}
        if guest is not None:
            boot = {"kernel": guest.kernel, "initrd": guest.initrd, "cmdline": guest.cmdline}
        fields: dict[str, object] = {"base_image": template, "memory_mb": 192, **boot, **kw}
        return VMSpec(job_uid=job_uid, worker_id=driver.worker_id, **fields)  # type: ignore[arg-type]
    return make
