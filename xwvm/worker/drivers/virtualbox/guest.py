"""One VirtualBox machine: its owner tags, state, start, power button, power off, removal
(with the media that belong to it alone)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from xwvm.worker.drivers.errors import ConnectionLost, DriverError, VMNotFound
from xwvm.worker.drivers.virtualbox.disk import release_template
from xwvm.worker.drivers.virtualbox.host import Host
from xwvm.worker.drivers.virtualbox.policy import (
    EXTRA_DIR,
    EXTRA_JOB,
    EXTRA_STARTED,
    EXTRA_WORKER,
)
from xwvm.worker.drivers.vm import ACTIVE, Owner, VMState
from xwvm.worker.drivers.vm import Guest as GuestBase

T = TypeVar("T")

_STATES = {
    "Running": VMState.RUNNING, "Starting": VMState.RUNNING, "Restoring": VMState.RUNNING,
    "Teleporting": VMState.RUNNING, "LiveSnapshotting": VMState.RUNNING,
    "OnlineSnapshotting": VMState.RUNNING,
    "Paused": VMState.PAUSED, "TeleportingPausedVM": VMState.PAUSED,
    "Stopping": VMState.STOPPING, "Saving": VMState.STOPPING,
    "Teleported": VMState.SHUTOFF,
    # The VM process died (Aborted), the guest hit a guru meditation (Stuck), or someone
    # saved the VM (we never do): the job's run cannot go on.
    "Aborted": VMState.CRASHED, "AbortedSaved": VMState.CRASHED, "Stuck": VMState.CRASHED,
    "Saved": VMState.CRASHED,
}


def map_state(name: str, started: bool) -> VMState:
    """VMState for a MachineState name; PoweredOff is DEFINED until the VM first started."""
    if name == "PoweredOff":
        return VMState.SHUTOFF if started else VMState.DEFINED
    return _STATES.get(name, VMState.CRASHED)


class Guest(GuestBase):
    """A wrapper over one IMachine, by name and UUID; every call's API error is translated
    and every call is repeated after a VBoxSVC restart (Host.run). After a reconnect the
    machine is found again by name, and taken only if its UUID is the same: another
    machine of that name is never touched (to this Guest, its VM is gone)."""

    def __init__(self, host: Host, machine: Any) -> None:
        self.host, self._machine = host, machine
        self._generation = host.generation
        with host.translated("machine name"):
            self.name, self.id = str(machine.name), str(machine.id)

    @property
    def machine(self) -> Any:
        """The IMachine, found again if VBoxSVC restarted since it was got."""
        if self._generation != self.host.generation or self._machine is None:
            vbox = self.host.vbox
            generation = self.host.generation
            with self.host.translated(f"find machine {self.name}"):
                machine = vbox.findMachine(self.name)
                same = str(machine.id) == self.id
            if not same:
                raise VMNotFound(f"{self.name} is another machine now (not {self.id})")
            self._machine, self._generation = machine, generation
        return self._machine

    def _run(self, action: str, call: Callable[[], T]) -> T:
        return self.host.run(f"{action} {self.name}", call)

    def tag(self, key: str) -> str:
        return self._run("extra data of", lambda: str(self.machine.getExtraData(key) or ""))

    def owner(self) -> Owner | None:
        """Worker id, job uid and VM folder from the machine's extra data."""
        return Owner(self.tag(EXTRA_WORKER), self.tag(EXTRA_JOB), self.tag(EXTRA_DIR))

    def state(self) -> VMState:
        return self._run("state of", self._state)

    def _state(self) -> VMState:
        try:
            value = int(self.machine.state)
            started = str(self.machine.getExtraData(EXTRA_STARTED) or "") == "1"
        except VMNotFound:  # unregistered meanwhile
            return VMState.MISSING
        except Exception as e:
            if self.host.status(e) == self.host.c.VBOX_E_OBJECT_NOT_FOUND:
                return VMState.MISSING
            raise
        return map_state(_name(self.host, value), started)

    def start(self) -> None:
        attempts = 0

        def launch() -> None:
            nonlocal attempts
            attempts += 1
            # Repeated after a reconnect: the lost attempt may have launched it already.
            if attempts > 1 and self._state() in ACTIVE:
                return
            self.machine.setExtraData(EXTRA_STARTED, "1")
            self.host.launch(self.machine, f"start {self.name}")

        self._run("start", launch)

    def shutdown(self) -> None:
        def press() -> None:
            with self.host.session(self.machine, False, f"shut down {self.name}") as s:
                s.console.powerButton()
        self._run("shut down", press)

    def power_off(self) -> None:
        """Power the VM off now; not running (or gone) is fine."""
        self._run("power off", self._power_off)

    def _power_off(self) -> None:
        if self._state() not in ACTIVE:
            return
        try:
            with self.host.session(self.machine, False, f"power off {self.name}") as s:
                progress = s.console.powerDown()
                self.host.wait(progress, f"power off {self.name}")
        except ConnectionLost:
            raise
        except DriverError:
            if self._state() in ACTIVE:
                raise

    def templates(self) -> list[Any]:
        """The parents of the machine's hard disks (the templates under its disks)."""
        return self._run("disks of", self._templates)

    def _templates(self) -> list[Any]:
        disks = [a.medium for a in self.machine.mediumAttachments
                 if a.type == self.host.c.DeviceType_HardDisk and a.medium is not None]
        return [d.parent for d in disks if d.parent is not None]

    def undefine(self) -> None:
        """Unregister the machine and delete its settings, logs and media that belong to it
        alone (its differencing disk, its context ISO copy); the template is untouched,
        and closed once no job's disk hangs off it. Gone already is fine."""
        def remove() -> list[Any]:
            try:
                templates = self._templates()
                self._remove()
            except VMNotFound:  # unregistered meanwhile (or by an attempt cut off)
                return []
            return templates
        for template in self._run("remove", remove):
            release_template(self.host, template)

    def _remove(self) -> None:
        c = self.host.c
        media = self.host._retrying(
            f"unregister {self.name}",
            lambda: self.machine.unregister(c.CleanupMode_DetachAllReturnHardDisksAndVMRemovable))
        with self.host.translated(f"delete {self.name}"):
            progress = self.machine.deleteConfig(media)
        self.host.wait(progress, f"delete {self.name}")


def _name(host: Host, value: int) -> str:
    for key, number in host.c.all_values("MachineState").items():
        if number == value and not key.startswith(("First", "Last")):
            return str(key)
    return "Null"

