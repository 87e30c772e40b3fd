"""One VM as the drivers see it: its states, its owner tag, and the primitives every
backend's wrapper of one VM (libvirt/guest.py, virtualbox/guest.py) provides to the
lifecycle written once in base.py."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from enum import StrEnum


class VMState(StrEnum):
    DEFINED = "defined"    # defined, never started
    RUNNING = "running"
    PAUSED = "paused"
    STOPPING = "stopping"  # a shutdown was requested and is under way
    SHUTOFF = "shutoff"    # the guest powered off (the payload ended) or was stopped
    CRASHED = "crashed"    # the hypervisor process died or the guest crashed
    MISSING = "missing"    # no such VM: never defined, or destroyed


ACTIVE = (VMState.RUNNING, VMState.PAUSED, VMState.STOPPING)  # a VM process is there


@dataclass(frozen=True)
class Owner:
    """The tag every VM carries from its first moment: which worker made it, for which
    job, where its files are. Ownership is decided from it, never from names alone."""

    worker_id: str
    job_uid: str
    vm_dir: str


class Guest(abc.ABC):
    """One VM as its backend wraps it: the primitives the shared lifecycle uses. Every
    method raises DriverError subclasses only."""

    name: str

    @abc.abstractmethod
    def owner(self) -> Owner | None:
        """The VM's owner tag; None when it has none (not ours) or is gone."""

    @abc.abstractmethod
    def state(self) -> VMState:
        """The VM's state now; MISSING when it disappeared meanwhile."""

    @abc.abstractmethod
    def start(self) -> None:
        """Boot the defined VM."""

    @abc.abstractmethod
    def shutdown(self) -> None:
        """Press the ACPI power button (the guest decides whether to obey)."""

    @abc.abstractmethod
    def power_off(self) -> None:
        """Power the VM off now; not running is fine."""

    @abc.abstractmethod
    def undefine(self) -> None:
        """Remove the (powered-off) VM and what the hypervisor keeps of it; gone is fine."""

    def is_active(self) -> bool:
        return self.state() in ACTIVE
