"""A libvirtd that dies under a running worker: every libvirt call of the driver surfaces
as a translated XwvmError (HypervisorUnavailable), never as a raw ``libvirtError``, and
the driver reconnects once libvirtd is back.

The libvirtd here is the test's own: run as the user nobody (a session daemon, with its
socket in a folder of this test), with no hypervisor modules (LIBVIRT_DRIVER_DIR points
at an empty folder), so the driver reaches libvirt's built-in test driver through it
(``test+unix://``): domains "run" without QEMU, and killing the daemon touches nothing
else on the host.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from xwvm.errors import XwvmError
from xwvm.worker.drivers import HypervisorUnavailable, VMSpec, VMState
from xwvm.worker.drivers.libvirt import LibvirtDriver
from xwvm.worker.drivers.libvirt.guest import Guest

JOB = "conn-1"


class Libvirtd:
    """A private libvirtd as the user nobody; start() again after kill()."""

    def __init__(self, root: Path) -> None:
        self.root, self.proc = root, None
        self.socket = root / "run" / "libvirt" / "libvirt-sock"
        self.uri = f"test+unix:///default?socket={self.socket}"

    def start(self) -> None:
        nobody = pwd.getpwnam("nobody")
        env = {"PATH": os.environ["PATH"], "HOME": str(self.root / "home"),
               "XDG_RUNTIME_DIR": str(self.root / "run"),
               "XDG_CONFIG_HOME": str(self.root / "home" / ".config"),
               "XDG_CACHE_HOME": str(self.root / "home" / ".cache"),
               "LIBVIRT_DRIVER_DIR": str(self.root / "no-drivers")}
        self.proc = subprocess.Popen(  # noqa: S603 - our own test daemon
            [shutil.which("libvirtd") or "libvirtd", "--timeout", "0"], env=env,
            user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while not self.socket.exists():
            assert self.proc.poll() is None, "the test's libvirtd exited at start"
            assert time.monotonic() < deadline, "the test's libvirtd made no socket"
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.socket.unlink(missing_ok=True)


@pytest.fixture
def libvirtd() -> Iterator[Libvirtd]:
    if shutil.which("libvirtd") is None:
        pytest.fail("libvirtd is missing: run `sudo ./scripts/install-vm-host.sh`",
                    pytrace=False)
    root = Path(tempfile.mkdtemp(prefix="xwvm-libvirtd-", dir="/var/tmp"))
    for sub in ("run", "home", "no-drivers"):
        (root / sub).mkdir()
    nobody = pwd.getpwnam("nobody")
    for path in (root, *root.iterdir()):
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
    root.chmod(0o711)  # the driver's work dir is in here (QEMU would need to traverse it)
    daemon = Libvirtd(root)
    daemon.start()
    yield daemon
    daemon.kill()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def running(libvirtd: Libvirtd) -> LibvirtDriver:
    """A driver connected through the test's libvirtd, with one running VM of its own
    (defined from the XML define() writes: the test driver has no accelerator to probe)."""
    driver = LibvirtDriver("w1", libvirtd.root / "work", uri=libvirtd.uri)
    spec = VMSpec(JOB, "w1", libvirtd.root / "base.qcow2")
    driver.host.define(driver.domain_xml(spec))
    driver.start(JOB)
    assert driver.state(JOB) == VMState.RUNNING and driver.list_own() == [JOB]
    return driver


def test_every_guest_call_on_a_dead_connection_is_translated(
        running: LibvirtDriver, libvirtd: Libvirtd) -> None:
    """The domain handle a call holds when libvirtd dies (between lookup and use)."""
    dom = running.host.lookup(f"xwvm_w1_{JOB}")
    assert dom is not None
    libvirtd.kill()
    guest = Guest(dom)
    for call in (guest.owner, guest.state, guest.is_active, guest.start, guest.shutdown,
                 guest.power_off, guest.undefine):
        with pytest.raises(HypervisorUnavailable):
            call()


def test_a_libvirtd_killed_mid_run_never_leaks_a_libvirt_error(
        running: LibvirtDriver, libvirtd: Libvirtd) -> None:
    """Public calls keep coming while libvirtd dies and comes back: each returns or raises
    an XwvmError; then the driver reconnects by itself."""
    leaked: list[BaseException] = []
    translated: list[XwvmError] = []
    done = threading.Event()

    def hammer() -> None:
        while not done.is_set():
            for call in (lambda: running.state(JOB), running.list_own,
                         lambda: running.console_size(JOB)):
                try:
                    call()
                except XwvmError as e:
                    translated.append(e)
                except BaseException as e:  # noqa: BLE001 - what the test looks for
                    leaked.append(e)

    worker = threading.Thread(target=hammer)
    worker.start()
    try:
        time.sleep(0.3)
        libvirtd.kill()
        time.sleep(0.5)
        for call in (lambda: running.stop(JOB, grace_s=0.2), lambda: running.start(JOB),
                     lambda: running.destroy(JOB), running.cleanup_leftovers):
            with pytest.raises(HypervisorUnavailable):
                call()
        result = running.probe(refresh=True)
        assert not result.usable and "libvirt unreachable" in result.reason
        libvirtd.start()
        time.sleep(0.3)
    finally:
        done.set()
        worker.join(30)
    assert not [e for e in leaked if isinstance(e, libvirt.libvirtError)], leaked
    assert not leaked, leaked
    assert any(isinstance(e, HypervisorUnavailable) for e in translated)
    # A fresh libvirtd: its test driver starts empty, and the driver is connected again.
    assert running.state(JOB) == VMState.MISSING and running.list_own() == []
