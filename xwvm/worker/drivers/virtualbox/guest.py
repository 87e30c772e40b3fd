"""One VirtualBox machine: its owner tags, state, start, power button, power off, removal
(with the media that belong to it alone)."""

from __future__ import annotations

from typing import Any

from xwvm.worker.drivers.errors import DriverError, VMNotFound
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
    """A wrapper over one IMachine; every call's API error is translated."""

    def __init__(self, host: Host, machine: Any) -> None:
        self.host, self.machine = host, machine
        with host.translated("machine name"):
            self.name = str(machine.name)

    def tag(self, key: str) -> str:
        with self.host.translated(f"extra data of {self.name}"):
            return str(self.machine.getExtraData(key) or "")

    def owner(self) -> Owner | None:
        """Worker id, job uid and VM folder from the machine's extra data."""
        return Owner(self.tag(EXTRA_WORKER), self.tag(EXTRA_JOB), self.tag(EXTRA_DIR))

    def state(self) -> VMState:
        try:
            with self.host.translated(f"state of {self.name}"):
                value = int(self.machine.state)
            started = self.tag(EXTRA_STARTED) == "1"
        except VMNotFound:  # unregistered meanwhile
            return VMState.MISSING
        return map_state(_name(self.host, value), started)

    def start(self) -> None:
        with self.host.translated(f"tag {self.name} started"):
            self.machine.setExtraData(EXTRA_STARTED, "1")
        self.host.launch(self.machine, f"start {self.name}")

    def shutdown(self) -> None:
        with self.host.session(self.machine, False, f"shut down {self.name}") as s:
            s.console.powerButton()

    def power_off(self) -> None:
        """Power the VM off now; not running is fine."""
        if self.state() not in ACTIVE:
            return
        try:
            with self.host.session(self.machine, False, f"power off {self.name}") as s:
                progress = s.console.powerDown()
                self.host.wait(progress, f"power off {self.name}")
        except DriverError:
            if self.state() in ACTIVE:
                raise

    def templates(self) -> list[Any]:
        """The parents of the machine's hard disks (the templates under its disks)."""
        with self.host.translated(f"disks of {self.name}"):
            disks = [a.medium for a in self.machine.mediumAttachments
                     if a.type == self.host.c.DeviceType_HardDisk and a.medium is not None]
            return [d.parent for d in disks if d.parent is not None]

    def undefine(self) -> None:
        """Unregister the machine and delete its settings, logs and media that belong to it
        alone (its differencing disk, its context ISO copy); the template is untouched,
        and closed once no job's disk hangs off it."""
        templates = self.templates()
        self._remove()
        for template in templates:
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

