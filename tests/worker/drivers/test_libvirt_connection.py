"""A libvirtd that dies or restarts under a running worker: every libvirt call of the
driver waits it out (within the reconnect window) and goes on, or surfaces as a translated
XwvmError (HypervisorUnavailable), never as a raw ``libvirtError``.

The libvirtd here is the test's own: run as the user nobody (a session daemon, with its
socket in a folder of this test), with no hypervisor modules (LIBVIRT_DRIVER_DIR points
at an empty folder), so the driver reaches libvirt's built-in test driver through it
(``test+unix://``): domains "run" without QEMU, and killing the daemon touches nothing
else on the host. The test driver keeps its domains in memory: they vanish with the
daemon. Where a test needs domains that outlive the broken connection (as QEMU domains
outlive a real libvirtd restart), the driver connects through a relay (libvirt_relay.py)
that cuts or refuses its connections while the daemon lives on.
"""

from __future__ import annotations

import logging
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

from tests.worker.drivers.libvirt_relay import Relay
from xwvm.errors import XwvmError
from xwvm.worker.drivers import HypervisorUnavailable, VMSpec, VMState
from xwvm.worker.drivers.errors import DriverError
from xwvm.worker.drivers.libvirt import LibvirtDriver
from xwvm.worker.drivers.libvirt.guest import Guest
from xwvm.worker.drivers.reconnect import RECONNECT_ENV, RECONNECT_S, reconnect_window

JOB = "conn-1"
SHORT_S = 0.3  # the reconnect window of tests where libvirtd stays down


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

    def freeze(self) -> None:
        """SIGSTOP: calls block, waiting for an answer."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

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


def _run_vm(driver: LibvirtDriver, root: Path, job: str = JOB) -> LibvirtDriver:
    """Define and start a VM of ``driver``'s own (from the XML define() writes: the test
    driver has no accelerator to probe)."""
    spec = VMSpec(job, "w1", root / "base.qcow2")
    driver.host.define(driver.domain_xml(spec))
    driver.start(job)
    assert driver.state(job) == VMState.RUNNING and job in driver.list_own()
    return driver


@pytest.fixture
def running(libvirtd: Libvirtd) -> LibvirtDriver:
    """A driver connected to the test's libvirtd with a short reconnect window, with one
    running VM of its own."""
    driver = LibvirtDriver("w1", libvirtd.root / "work", uri=libvirtd.uri,
                           reconnect_s=SHORT_S)
    return _run_vm(driver, libvirtd.root)


@pytest.fixture
def relay(libvirtd: Libvirtd) -> Iterator[Relay]:
    """The relay, and a connection of the test's own straight to libvirtd: the test
    driver drops its default state when its last connection closes, and the relay's cuts
    must leave the daemon's domains alive."""
    keeper = libvirt.open(libvirtd.uri)
    r = Relay(libvirtd.root / "relay.sock", libvirtd.socket)
    yield r
    r.down()
    keeper.close()


@pytest.fixture
def relayed(libvirtd: Libvirtd, relay: Relay) -> LibvirtDriver:
    """A driver connected through the relay (30 s window), with one running VM."""
    driver = LibvirtDriver("w1", libvirtd.root / "work", reconnect_s=30,
                           uri=f"test+unix:///default?socket={relay.path}")
    return _run_vm(driver, libvirtd.root)


@pytest.fixture
def vm_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="xwvm.worker.vm")
    return caplog


def _lines(log: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in log.records if r.name == "xwvm.worker.vm"]


def test_every_guest_call_on_a_dead_connection_is_translated(
        running: LibvirtDriver, libvirtd: Libvirtd) -> None:
    """The domain handle a call holds when libvirtd dies (between lookup and use)."""
    dom = running.host.lookup(f"xwvm_w1_{JOB}")
    assert dom is not None
    libvirtd.kill()
    guest = Guest(running.host, dom)
    for call in (guest.owner, guest.state, guest.is_active, guest.start, guest.shutdown,
                 guest.power_off, guest.undefine):
        started = time.monotonic()
        with pytest.raises(HypervisorUnavailable, match="gave up reconnecting after"):
            call()
        assert time.monotonic() - started >= SHORT_S  # the window was waited out


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


def test_the_reconnect_window_defaults_to_60_s_and_the_environment_overrides_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RECONNECT_ENV, raising=False)
    assert RECONNECT_S == 60.0 and reconnect_window() == 60.0
    assert LibvirtDriver("w1", Path("/nonexistent")).host.reconnect_s == 60.0
    monkeypatch.setenv(RECONNECT_ENV, "2.5")
    assert LibvirtDriver("w1", Path("/nonexistent")).host.reconnect_s == 2.5
    assert LibvirtDriver("w1", Path("/nonexistent"), reconnect_s=7).host.reconnect_s == 7
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv(RECONNECT_ENV, bad)
        with pytest.raises(DriverError, match="(?i)reconnect"):
            reconnect_window()


def test_a_call_blocked_when_libvirtd_dies_goes_on_after_its_restart(
        libvirtd: Libvirtd, vm_log: pytest.LogCaptureFixture) -> None:
    """libvirtd freezes under a call (it waits for an answer), is killed, and comes back
    2 s later: the call reconnects and returns, and the driver works on."""
    driver = _run_vm(LibvirtDriver("w1", libvirtd.root / "work", uri=libvirtd.uri,
                                   reconnect_s=30), libvirtd.root)
    answers: list[object] = []
    libvirtd.freeze()
    call = threading.Thread(target=lambda: answers.append(driver.list_own()))
    started = time.monotonic()
    call.start()
    time.sleep(0.5)
    assert call.is_alive() and not answers  # blocked on the frozen daemon
    libvirtd.kill()
    restart = threading.Timer(2.0, libvirtd.start)
    restart.start()
    call.join(30)
    restart.join()
    assert answers == [[]]  # the fresh test driver has no domains: the call still answered
    assert 2.0 <= time.monotonic() - started < 10
    _run_vm(driver, libvirtd.root, "conn-2")  # defines and boots on the new daemon
    lines = _lines(vm_log)
    assert any(level == logging.WARNING and "lost the connection to libvirt at "
               "test+unix:///default during 'list domains'" in text for level, text in lines)
    assert any(level == logging.INFO and text.startswith("reconnected to libvirt at ")
               for level, text in lines)
    assert not any("socket=" in text for _, text in lines)  # the URI's query is not logged


def test_a_libvirtd_that_stays_down_ends_the_call_after_the_window(
        libvirtd: Libvirtd, vm_log: pytest.LogCaptureFixture) -> None:
    driver = _run_vm(LibvirtDriver("w1", libvirtd.root / "work", uri=libvirtd.uri,
                                   reconnect_s=1.5), libvirtd.root)
    libvirtd.kill()
    started = time.monotonic()
    with pytest.raises(HypervisorUnavailable) as e:
        driver.state(JOB)
    took = time.monotonic() - started
    assert 1.5 <= took < 4
    assert "gave up reconnecting after 1." in e.value.message
    assert "reconnect window 1.5 s" in e.value.message and e.value.status == 503
    assert any(level == logging.ERROR and "gave up reconnecting to libvirt" in text
               for level, text in _lines(vm_log))


def test_a_stale_guest_finds_its_domain_again_after_a_reconnect(
        relayed: LibvirtDriver, relay: Relay, vm_log: pytest.LogCaptureFixture) -> None:
    """The connection breaks and libvirtd is unreachable for 1.5 s while the domain lives
    on (as QEMU's do): a Guest taken before finds it again by name and UUID."""
    guest = relayed._require(JOB)
    relay.outage(1.5)
    assert guest.state() == VMState.RUNNING
    owner = guest.owner()
    assert owner is not None and owner.job_uid == JOB
    relay.cut()
    guest.power_off()
    relay.cut()
    guest.undefine()
    assert guest.state() == VMState.MISSING and relayed.list_own() == []
    assert sum("lost the connection" in text for _, text in _lines(vm_log)) >= 1


def test_a_stale_guest_never_touches_another_domain_of_its_name(
        relayed: LibvirtDriver, relay: Relay, libvirtd: Libvirtd) -> None:
    """While the driver is cut off, its domain is replaced by another of the same name
    (another UUID): to the stale Guest its VM is gone, and the other one is left alone."""
    guest = relayed._require(JOB)
    relay.down()
    other = libvirt.open(libvirtd.uri)
    try:
        dom = other.lookupByName(guest.name)
        xml = dom.XMLDesc(0)
        dom.destroy()
        dom.undefine()
        other.defineXML(xml.replace(guest.uuid, "0f0e0d0c-0b0a-4908-8706-050403020100"))
        relay.up()
        assert guest.state() == VMState.MISSING and not guest.is_active()
        guest.power_off()
        guest.undefine()
        assert other.lookupByName(guest.name).UUIDString() != guest.uuid  # still there
    finally:
        other.close()


def test_define_cut_off_by_a_lost_connection_is_not_repeated(
        relayed: LibvirtDriver, relay: Relay, libvirtd: Libvirtd) -> None:
    """libvirtd defines (or creates) the domain, but its answer is lost with the
    connection: after reconnecting, the driver finds the domain it made instead of
    making it again (which libvirt would refuse: the name is taken)."""
    for job, make in (("conn-2", relayed.host.define),
                      ("conn-3", relayed.host.create_transient)):
        xml = relayed.domain_xml(VMSpec(job, "w1", libvirtd.root / "base.qcow2"))
        relay.swallow_reply()
        made = relayed.host.lookup(Guest(relayed.host, make(xml)).name)
        assert relay.swallowed == (1 if job == "conn-2" else 2)
        assert made is not None and relayed._guest(job) is not None
        with pytest.raises(DriverError):  # what repeating it blindly would have done
            make(xml)
    assert relayed.list_own() == [JOB, "conn-2", "conn-3"]


@pytest.mark.parametrize("reply", [1, 2, 3, 4, 5])
def test_destroy_cut_off_anywhere_leaves_nothing_behind(
        relayed: LibvirtDriver, relay: Relay, reply: int) -> None:
    """destroy() (look up, owner, power off, undefine) with the connection lost after
    its ``reply``-th call was done: it reconnects, finishes, and stays idempotent."""
    vm_dir = relayed._vm_dir(JOB)
    vm_dir.mkdir(parents=True)
    relay.swallow_reply(reply)
    relayed.destroy(JOB)
    assert relay.swallowed == 1
    assert relayed.state(JOB) == VMState.MISSING and relayed.list_own() == []
    assert not vm_dir.exists()
    relayed.destroy(JOB)  # again: nothing to do, no error
