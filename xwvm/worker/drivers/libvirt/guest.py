"""One libvirt domain: state, start, shutdown, power off, undefine, and its owner tag.

Every libvirt call here runs through :meth:`~xwvm.worker.drivers.libvirt.host.Host.run`:
a libvirtd that restarts under a call is waited out and the call repeated (within the
Host's reconnect window), and any other libvirt error surfaces as a DriverError subclass,
never as a raw ``libvirtError``. A ``virDomain`` belongs to the connection it came from:
after a reconnect the Guest finds its domain again by name, and takes it only if its UUID
is the same (libvirt keeps a domain's UUID across daemon restarts; a domain of the same
name with another UUID is another VM, never touched: to this Guest, its VM is gone).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import libvirt

from xwvm.worker.drivers.errors import VMNotFound
from xwvm.worker.drivers.libvirt.config import XWVM_NS, OwnerTag
from xwvm.worker.drivers.libvirt.host import Host, translated
from xwvm.worker.drivers.reconnect import log
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
_MISSING = object()  # a call's answer when the domain is gone and that is an error


def map_state(state: int, reason: int) -> VMState:
    if state == libvirt.VIR_DOMAIN_SHUTOFF:
        if reason == libvirt.VIR_DOMAIN_SHUTOFF_UNKNOWN:
            return VMState.DEFINED
        return VMState.CRASHED if reason in _SHUTOFF_CRASHED else VMState.SHUTOFF
    return _RUNNING.get(state, VMState.CRASHED)


class Guest(GuestBase):
    """A wrapper over one virDomain, by name and UUID; every call's libvirt error is
    translated, and every call survives a libvirtd restart (see the module's doc)."""

    def __init__(self, host: Host, dom: libvirt.virDomain) -> None:
        self.host, self._dom = host, dom
        with translated("domain name"):  # both are kept in the handle: no call to libvirtd
            self.name, self.uuid = str(dom.name()), str(dom.UUIDString())

    def _domain(self, conn: libvirt.virConnect) -> libvirt.virDomain | None:
        """This Guest's domain on ``conn``: the handle it holds, or after a reconnect the
        domain of its name and UUID found again; None when that domain is gone."""
        if self._dom is not None and self._dom.connect() is conn:
            return self._dom
        try:
            dom = conn.lookupByName(self.name)
        except libvirt.libvirtError as e:
            if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
            dom = None
        if dom is not None and dom.UUIDString() != self.uuid:
            log.warning("after reconnecting, %s is another domain (UUID %s, not %s): "
                        "not touching it", self.name, dom.UUIDString(), self.uuid)
            dom = None
        self._dom = dom
        return dom

    def _call(self, action: str, call: Callable[[libvirt.virDomain], Any], gone: Any,
              *gone_codes: int) -> Any:
        """``call(domain)`` through the Host (translated, repeated after a reconnect);
        ``gone`` when the domain no longer exists (or the call fails with ``gone_codes``);
        VMNotFound when ``gone`` is _MISSING."""
        def attempt(conn: libvirt.virConnect) -> Any:
            dom = self._domain(conn)
            if dom is None:
                return gone
            try:
                return call(dom)
            except libvirt.libvirtError as e:
                if e.get_error_code() in (libvirt.VIR_ERR_NO_DOMAIN, *gone_codes):
                    return gone
                raise
        result = self.host.run(f"{action} {self.name}", attempt)
        if result is _MISSING:
            raise VMNotFound(f"{action} {self.name}: the domain no longer exists")
        return result

    def owner(self) -> Owner | None:
        xml = self._call("metadata of", lambda d: d.metadata(
            libvirt.VIR_DOMAIN_METADATA_ELEMENT, XWVM_NS), None,
            libvirt.VIR_ERR_NO_DOMAIN_METADATA)
        if xml is None:
            return None
        tag = OwnerTag.from_xml(xml)
        return Owner(tag.worker_id, tag.job_uid, tag.vm_dir)

    def state(self) -> VMState:
        found = self._call("state of", lambda d: d.state(), None)
        return VMState.MISSING if found is None else map_state(*found)

    def is_active(self) -> bool:
        return bool(self._call("state of", lambda d: d.isActive(), False))

    def start(self) -> None:
        attempts = 0

        def boot(dom: libvirt.virDomain) -> None:
            nonlocal attempts
            attempts += 1
            # Repeated after a reconnect: the lost attempt may have booted it already.
            if attempts == 1 or not dom.isActive():
                dom.create()

        self._call("start", boot, _MISSING)

    def shutdown(self) -> None:
        self._call("shut down", lambda d: d.shutdownFlags(
            libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN), _MISSING)

    def power_off(self) -> None:
        """Kill QEMU now; not running (or gone) is fine."""
        self._call("power off", lambda d: d.destroy(), None,
                   libvirt.VIR_ERR_OPERATION_INVALID)

    def undefine(self) -> None:
        """Remove the domain's definition; gone is fine."""
        self._call("undefine", lambda d: d.undefine(), None)
