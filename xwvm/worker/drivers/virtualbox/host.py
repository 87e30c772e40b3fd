"""The VirtualBox connection (vboxapi), and the one place where COM/XPCOM errors become
xwvm errors.

``vboxapi`` is imported here and nowhere else: ``Host(api=...)`` takes any module-like
object with a ``VirtualBoxManager`` (the tests pass a fake of it). Every API call of the
driver runs inside :func:`Host.translated`, which turns the binding's exception (COM's
``pywintypes.com_error`` or XPCOM's ``xpcom.Exception``, whichever ``oXcptClass`` the
manager reports) into a :class:`~xwvm.worker.drivers.errors.DriverError` subclass.

A VBoxSVC that restarts (or dies and is started again by the next client, as XPCOM does)
leaves every object a client holds dead: calls on them fail with what vboxapi's
``xcptIsDeadInterface`` recognises (XPCOM: NS_ERROR_ABORT, NS_ERROR_CALL_FAILED; COM:
RPC_S_SERVER_UNAVAILABLE, RPC_S_CALL_FAILED, RPC_E_DISCONNECTED...). :meth:`Host.run`
then drops the IVirtualBox, gets a fresh one from the manager (``getVirtualBox()`` makes a
new VirtualBoxClient, which reaches the new VBoxSVC), waiting while VBoxSVC is absent,
and repeats the call, within the reconnect window (xwvm.worker.drivers.reconnect). The
manager itself is kept: its ``deinit()`` shuts XPCOM down for the whole process. Machines
are found again by name and UUID (virtualbox/guest.py). VirtualBox's VM processes exit
when VBoxSVC goes away ("VBoxSVC became unavailable, exiting"): after a restart a job's
VM reads as CRASHED (Aborted), and stop()/destroy() still work.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from types import ModuleType
from typing import Any, TypeVar

from xwvm.worker.drivers.errors import (
    ConnectionLost,
    DriverError,
    HypervisorUnavailable,
    SpecError,
    VMNotFound,
)
from xwvm.worker.drivers.reconnect import Outage, reconnect_window

T = TypeVar("T")

# A standard COM result code (VBox/com/defs.h; XPCOM's NS_ERROR_* share the values).
E_INVALIDARG = 0x80070057
# The VBoxSVC process (or the COM connection to it) went away: vboxapi's
# xcptIsDeadInterface lists, for a manager that lacks it.
DEAD = {0x80004004,  # NS_ERROR_ABORT
        0x800706BA,  # RPC_S_SERVER_UNAVAILABLE
        0x800706BE,  # RPC_S_CALL_FAILED / NS_ERROR_CALL_FAILED
        0x800706BF,  # RPC_S_CALL_FAILED_DNE
        0x80010108,  # RPC_E_DISCONNECTED
        0x800706B5}  # RPC_S_UNKNOWN_IF

# Session locks: VirtualBox releases a machine's session lock asynchronously. After a VM
# process exits (a guest poweroff, powerDown) or another client closes its session,
# VBoxSVC notices the closed session a moment later; until then lockMachine and
# launchVMProcess fail with VBOX_E_INVALID_OBJECT_STATE ("already locked for a session
# (or being unlocked)"). BOINC's vboxwrapper learnt to retry these; so do we, a bounded
# number of times with doubling waits (about 6 s in all), then give up with the error.
LOCK_ATTEMPTS = 8
LOCK_FIRST_WAIT_S = 0.05
LOCK_MAX_WAIT_S = 2.0
PROGRESS_TIMEOUT_S = 120.0


def load_api() -> ModuleType:
    """The real binding (PyPI's vbox-sdk). It imports without VirtualBox; connecting
    (VirtualBoxManager) is what needs VirtualBox's XPCOM/COM libraries."""
    try:
        import vboxapi
    except ImportError as e:
        raise HypervisorUnavailable("VirtualBox unreachable: its Python API is missing "
                                    f"(pip install vbox-sdk): {e}") from e
    return vboxapi


class Host:
    """One connection to VBoxSVC, opened lazily. All of the driver's API calls go through
    here or through :meth:`translated`."""

    def __init__(self, api: Any = None, reconnect_s: float | None = None) -> None:
        self._api = api
        self.reconnect_s = reconnect_window(reconnect_s)
        self.generation = 0  # counts IVirtualBox objects got: a machine belongs to one
        self._mgr: Any = None
        self._vbox: Any = None
        self._errors: Any = None  # the last manager: classifies errors even after close()
        self._threads: set[int] = set()
        self._lock = threading.Lock()
        self.lock_attempts = LOCK_ATTEMPTS
        self.lock_first_wait_s = LOCK_FIRST_WAIT_S

    # -- connection ---------------------------------------------------------------------

    def connect(self) -> tuple[Any, Any]:
        """(manager, IVirtualBox); HypervisorUnavailable with the reason if VirtualBox
        cannot be reached (ConnectionLost once connected before: run() waits that out)."""
        with self._lock:
            if self._vbox is not None:
                self._attach_thread()
                return self._mgr, self._vbox
            mgr = self._mgr if self._mgr is not None else self._manager()
            try:
                vbox = mgr.getVirtualBox()
            except Exception as e:
                kind = ConnectionLost if self._mgr is not None else HypervisorUnavailable
                raise kind(f"VirtualBox unreachable: VBoxSVC did not answer: "
                           f"{_message(mgr, e)}") from e
            self._mgr, self._vbox, self._errors = mgr, vbox, mgr
            self.generation += 1
            self._threads = {threading.get_ident()}
            return mgr, vbox

    def _manager(self) -> Any:
        api = self._api if self._api is not None else load_api()
        try:
            return api.VirtualBoxManager(None, None)
        except ImportError as e:
            raise HypervisorUnavailable(
                f"VirtualBox unreachable: vboxapi cannot load VirtualBox's XPCOM/COM "
                f"libraries ({e}); is VirtualBox installed?") from e
        except Exception as e:  # the binding raises bare Exceptions while starting up
            raise HypervisorUnavailable(f"VirtualBox unreachable: {e}") from e

    def _attach_thread(self) -> None:
        """XPCOM wants every other thread that calls the API attached first (vboxapi's
        initPerThread); the worker calls the driver from one thread, but be safe."""
        tid = threading.get_ident()
        if tid not in self._threads:
            self._threads.add(tid)
            init = getattr(self._mgr, "initPerThread", None)
            if init is not None:
                with suppress(Exception):
                    init()

    @property
    def mgr(self) -> Any:
        return self.connect()[0]

    @property
    def vbox(self) -> Any:
        return self.connect()[1]

    @property
    def c(self) -> Any:
        """The API's constants (``c.MachineState_Running``, ``c.VBOX_E_OBJECT_NOT_FOUND``)."""
        return self.mgr.constants

    def close(self) -> None:
        with self._lock:
            if self._mgr is not None:
                with suppress(Exception):
                    self._mgr.deinit()
            self._mgr = self._vbox = None

    def _drop(self) -> None:
        """Forget the dead IVirtualBox (and with it every object got through it)."""
        with self._lock:
            self._vbox = None

    @property
    def service(self) -> str:
        return "VirtualBox (VBoxSVC)"

    def run(self, action: str, call: Callable[[], T]) -> T:
        """``call()`` with its API errors translated. When VBoxSVC restarts under it (a
        dead interface), reconnect and call again, for up to ``reconnect_s``: ``call``
        must be safe to repeat, and find what it works on again (Guest.machine does)."""
        outage: Outage | None = None
        while True:
            try:
                if outage is not None:
                    self.connect()
                    outage.recovered()
                with self.translated(action):
                    return call()
            except ConnectionLost as e:
                self._drop()
                if outage is None:
                    outage = Outage(self.service, action, e.message, self.reconnect_s)
                outage.pause(e.message)

    # -- errors -------------------------------------------------------------------------

    def dead(self, e: BaseException) -> bool:
        """Whether ``e`` says VBoxSVC is gone (the manager's xcptIsDeadInterface)."""
        mgr = self._errors
        check = getattr(mgr, "xcptIsDeadInterface", None)
        if check is not None:
            with suppress(Exception):
                return bool(check(e))
        return self.status(e) in DEAD

    def status(self, e: BaseException) -> int | None:
        """The unsigned result code of a COM/XPCOM error; None for any other exception."""
        mgr = self._errors
        if mgr is None or not isinstance(e, mgr.oXcptClass):
            return None
        return int(mgr.xcptGetStatus(e)) & 0xFFFFFFFF

    def translate(self, e: BaseException, action: str) -> DriverError:
        code = self.status(e)
        assert code is not None
        c = self._errors.constants
        message = f"{action}: {_message(self._errors, e)}"
        details = {"vbox_code": f"{code:#010x}"}
        if code == c.VBOX_E_OBJECT_NOT_FOUND:
            return VMNotFound(message, details=details)
        if code in (E_INVALIDARG, c.VBOX_E_NOT_SUPPORTED):
            return SpecError(message, details=details)
        if self.dead(e):
            self._drop()
            return ConnectionLost(message, details=details)
        return DriverError(message, details=details)

    @contextmanager
    def translated(self, action: str) -> Iterator[None]:
        """Run a block of API calls; any COM/XPCOM error leaves it as an xwvm DriverError."""
        try:
            yield
        except DriverError:
            raise
        except Exception as e:
            if self.status(e) is None:
                raise
            raise self.translate(e, action) from e

    # -- sessions and progress ----------------------------------------------------------

    def _retrying(self, action: str, call: Any) -> Any:
        """``call()``, retried while the machine's session lock is still being released."""
        wait = self.lock_first_wait_s
        for attempt in range(1, self.lock_attempts + 1):
            try:
                return call()
            except Exception as e:
                busy = self.status(e) == self._errors.constants.VBOX_E_INVALID_OBJECT_STATE
                if not busy or attempt == self.lock_attempts:
                    if self.status(e) is None:
                        raise
                    raise self.translate(e, f"{action} (attempt {attempt})") from e
                time.sleep(wait)
                wait = min(wait * 2, LOCK_MAX_WAIT_S)
        raise AssertionError("unreachable")

    @contextmanager
    def session(self, machine: Any, write: bool, action: str) -> Iterator[Any]:
        """A session holding ``machine``'s lock (Write to change its settings, Shared to
        reach a running VM's console); always unlocked on the way out."""
        session = self.mgr.getSessionObject()
        lock = self.c.LockType_Write if write else self.c.LockType_Shared
        self._retrying(f"lock {action}", lambda: machine.lockMachine(session, lock))
        try:
            with self.translated(action):
                yield session
        finally:
            with suppress(Exception):
                session.unlockMachine()

    def launch(self, machine: Any, action: str) -> None:
        """Start the VM process (headless) and wait until the VM runs."""
        session = self.mgr.getSessionObject()
        progress = self._retrying(action, lambda: machine.launchVMProcess(
            session, "headless", []))
        try:
            self.wait(progress, action)
        finally:
            with suppress(Exception):
                session.unlockMachine()

    def wait(self, progress: Any, action: str, timeout_s: float = PROGRESS_TIMEOUT_S) -> None:
        """Wait for an IProgress; its failure becomes a DriverError."""
        with self.translated(action):
            progress.waitForCompletion(int(timeout_s * 1000))
            if not progress.completed:
                raise DriverError(f"{action}: no result within {timeout_s:.0f} s")
            code = int(progress.resultCode) & 0xFFFFFFFF
            if code:
                info = progress.errorInfo
                text = info.text if info is not None else f"result {code:#010x}"
                err = DriverError(f"{action}: {text}", details={"vbox_code": f"{code:#010x}"})
                if code == self.c.VBOX_E_OBJECT_NOT_FOUND:
                    err = VMNotFound(err.message, details=err.details)
                raise err


def _message(mgr: Any, e: BaseException) -> str:
    with suppress(Exception):
        text = mgr.xcptGetMessage(e)
        if text:
            return str(text)
    return str(e) or type(e).__name__
