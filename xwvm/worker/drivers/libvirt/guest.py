"""One libvirt domain: state, start, shutdown, destroy, undefine, and its owner tag."""

from __future__ import annotations

import libvirt

from xwvm.worker.drivers.base import VMState
from xwvm.worker.drivers.libvirt.config import XWVM_NS, OwnerTag
from xwvm.worker.drivers.libvirt.host import translated

_SHUTOFF_CRASHED = {libvirt.VIR_DOMAIN_SHUTOFF_CRASHED, libvirt.VIR_DOMAIN_SHUTOFF_FAILED,
                    libvirt.VIR_DOMAIN_SHUTOFF_DAEMON}


def map_state(state: int, reason: int) -> VMState:
    if state == libvirt.VIR_DOMAIN_RUNNING:
        return VMState.RUNNING
    if state == libvirt.VIR_DOMAIN_BLOCKED:  # running, waiting on a resource
        return VMState.RUNNING
    if state in (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PMSUSPENDED):
        return VMState.PAUSED
    if state == libvirt.VIR_DOMAIN_SHUTDOWN:
        return VMState.STOPPING
    if state == libvirt.VIR_DOMAIN_CRASHED:
        return VMState.CRASHED
    if state == libvirt.VIR_DOMAIN_SHUTOFF:
        if reason == libvirt.VIR_DOMAIN_SHUTOFF_UNKNOWN:
            return VMState.DEFINED
        return VMState.CRASHED if reason in _SHUTOFF_CRASHED else VMState.SHUTOFF
    return VMState.CRASHED


class Guest:
    """A wrapper over one virDomain; every call's libvirt error is translated."""

    def __init__(self, dom: libvirt.virDomain) -> None:
        self.dom = dom
        self.name = dom.name()

    def owner(self) -> OwnerTag | None:
        try:
            xml = self.dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, XWVM_NS)
        except libvirt.libvirtError as e:
            if e.get_error_code() in (libvirt.VIR_ERR_NO_DOMAIN_METADATA,
                                      libvirt.VIR_ERR_NO_DOMAIN):
                return None
            raise
        return OwnerTag.from_xml(xml)

    def state(self) -> VMState:
        try:
            state, reason = self.dom.state()
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return VMState.MISSING
            raise
        return map_state(state, reason)

    def is_active(self) -> bool:
        with translated(f"state of {self.name}"):
            try:
                return bool(self.dom.isActive())
            except libvirt.libvirtError as e:
                if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    return False
                raise

    def start(self) -> None:
        with translated(f"start {self.name}"):
            self.dom.create()

    def shutdown(self) -> None:
        """Press the ACPI power button (the guest decides whether to obey)."""
        with translated(f"shut down {self.name}"):
            self.dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)

    def power_off(self) -> None:
        """Kill QEMU now; not running is fine."""
        with translated(f"power off {self.name}"):
            try:
                self.dom.destroy()
            except libvirt.libvirtError as e:
                if e.get_error_code() not in (libvirt.VIR_ERR_OPERATION_INVALID,
                                              libvirt.VIR_ERR_NO_DOMAIN):
                    raise

    def undefine(self) -> None:
        with translated(f"undefine {self.name}"):
            try:
                self.dom.undefine()
            except libvirt.libvirtError as e:
                if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise

    def xml(self) -> str:
        with translated(f"XML of {self.name}"):
            return str(self.dom.XMLDesc(0))
