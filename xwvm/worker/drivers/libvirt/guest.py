"""One libvirt domain: state, start, shutdown, power off, undefine, and its owner tag.

Every libvirt call here runs inside :func:`~xwvm.worker.drivers.libvirt.host.translated`:
a libvirtd that restarts or a connection that breaks surfaces as a DriverError subclass
(HypervisorUnavailable), never as a raw ``libvirtError``.
"""

from __future__ import annotations

import libvirt

from xwvm.worker.drivers.libvirt.config import XWVM_NS, OwnerTag
from xwvm.worker.drivers.libvirt.host import translated
from xwvm.worker.drivers.vm import Guest as GuestBase
from xwvm.worker.drivers.vm import Owner, VMState

_SHUTOFF_CRASHED = {libvirt.VIR_DOMAIN_SHUTOFF_CRASHED, libvirt.VIR_DOMAIN_SHUTOFF_FAILED,
                    libvirt.VIR_DOMAIN_SHUTOFF_DAEMON}
_RUNNING = {libvirt.VIR_DOMAIN_RUNNING: VMState.RUNNING,
            libvirt.VIR_DOMAIN_BLOCKED: VMState.RUNNING,  # running, waiting on a resource
            libvirt.VIR_DOMAIN_PAUSED: VMState.PAUSED,
            libvirt.VIR_DOMAIN_PMSUSPENDED: VMState.PAUSED,
            libvirt.VIR_DOMAIN_SHUTDOWN: VMState.STOPPING,
            libvirt.VIR_DOMAIN_CRASHED: VMState.CRASHED}


def map_state(state: int, reason: int) -> VMState:
    if state == libvirt.VIR_DOMAIN_SHUTOFF:
        if reason == libvirt.VIR_DOMAIN_SHUTOFF_UNKNOWN:
            return VMState.DEFINED
        return VMState.CRASHED if reason in _SHUTOFF_CRASHED else VMState.SHUTOFF
    return _RUNNING.get(state, VMState.CRASHED)


def _gone(e: libvirt.libvirtError, *codes: int) -> bool:
    return e.get_error_code() in (libvirt.VIR_ERR_NO_DOMAIN, *codes)


class Guest(GuestBase):
    """A wrapper over one virDomain; every call's libvirt error is translated."""

    def __init__(self, dom: libvirt.virDomain) -> None:
        self.dom = dom
        with translated("domain name"):
            self.name = str(dom.name())

    def owner(self) -> Owner | None:
        with translated(f"metadata of {self.name}"):
            try:
                xml = self.dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, XWVM_NS)
            except libvirt.libvirtError as e:
                if _gone(e, libvirt.VIR_ERR_NO_DOMAIN_METADATA):
                    return None
                raise
        tag = OwnerTag.from_xml(xml)
        return Owner(tag.worker_id, tag.job_uid, tag.vm_dir)

    def state(self) -> VMState:
        with translated(f"state of {self.name}"):
            try:
                state, reason = self.dom.state()
            except libvirt.libvirtError as e:
                if _gone(e):
                    return VMState.MISSING
                raise
        return map_state(state, reason)

    def is_active(self) -> bool:
        with translated(f"state of {self.name}"):
            try:
                return bool(self.dom.isActive())
            except libvirt.libvirtError as e:
                if _gone(e):
                    return False
                raise

    def start(self) -> None:
        with translated(f"start {self.name}"):
            self.dom.create()

    def shutdown(self) -> None:
        with translated(f"shut down {self.name}"):
            self.dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)

    def power_off(self) -> None:
        """Kill QEMU now; not running is fine."""
        with translated(f"power off {self.name}"):
            try:
                self.dom.destroy()
            except libvirt.libvirtError as e:
                if not _gone(e, libvirt.VIR_ERR_OPERATION_INVALID):
                    raise

    def undefine(self) -> None:
        with translated(f"undefine {self.name}"):
            try:
                self.dom.undefine()
            except libvirt.libvirtError as e:
                if not _gone(e):
                    raise
