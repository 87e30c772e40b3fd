"""A FAKE of the ``vboxapi`` module (PyPI ``vbox-sdk``) and of the VirtualBox behind it.

VirtualBox cannot run on the project's machines (no package, no kernel module), so the
VirtualBox driver is tested against this fake only. It mirrors the real Python binding:
``VirtualBoxManager(None, None)`` with ``constants``, ``getVirtualBox()``,
``getSessionObject()``, ``xcptGetStatus()`` and ``oXcptClass``; the COM objects keep the
real method and attribute names (IVirtualBox.createMachine, IMachine.lockMachine,
ISession.console, IMedium.createDiffStorage, IProgress.waitForCompletion...), and fail the
way VirtualBox does, with its result codes (see constants.py, checked against vbox-sdk).

What it models (api.py): machines that must be locked with a session to be changed, and
whose changes count only after saveSettings; registration; the session lock released
asynchronously after a VM process ends; media (immutable, read-only, differencing VDIs
written as real files); launchVMProcess returning an IProgress; PoweredOff -> Starting ->
Running -> Stopping -> PoweredOff; ACPI power button; a VM process (a real ``sleep``
process whose death reads as Aborted); a guest whose program is read from its boot
sector (see guest.py) and writes to the serial port's RawFile.

``start_service()`` plays "VirtualBox is installed and VBoxSVC runs"; without it,
``VirtualBoxManager()`` fails as the real one does when VirtualBox is not installed.

``FakeService.restart(down_s)`` plays VBoxSVC dying and coming back (remote.py): the
manager hands out proxies, and every proxy got before a restart is dead (any use raises
NS_ERROR_CALL_FAILED, a dead interface to vboxapi's ``xcptIsDeadInterface``); while
VBoxSVC is down, ``getVirtualBox()`` fails the same way; VM processes exit and their
machines read Aborted. ``FakeService.restart_on[API name] = down_s`` restarts it just as
a client next uses that API (to land a restart in the middle of a driver call).
"""

from __future__ import annotations

from tests.support.fake_vboxapi.api import (
    FakeService,
    FakeXPCOMError,
    VirtualBoxManager,
    service,
    start_service,
    stop_service,
)

__all__ = ["FakeService", "FakeXPCOMError", "VirtualBoxManager", "service", "start_service",
           "stop_service"]
