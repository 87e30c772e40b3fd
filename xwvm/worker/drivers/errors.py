"""The hypervisor drivers' errors: every backend raises these, never its library's own."""

from __future__ import annotations

from xwvm.errors import XwvmError


class DriverError(XwvmError):
    """The hypervisor failed or refused (a host problem, not the job's)."""

    status, code = 500, "hypervisor_error"


class HypervisorUnavailable(DriverError):
    """The hypervisor cannot be reached or cannot run VMs on this host."""

    status, code = 503, "hypervisor_unavailable"


class ConnectionLost(HypervisorUnavailable):
    """The connection to the hypervisor's service broke under a call (the service restarts
    or died): the backend reconnects and repeats the call within its reconnect window
    (xwvm.worker.drivers.reconnect); only a backend's own retry loop sees this one."""


class VMNotFound(DriverError):
    """No VM of this worker for that job."""

    status, code = 404, "vm_not_found"


class VMExists(DriverError):
    """A VM for that job is already defined."""

    status, code = 409, "vm_exists"


class SpecError(DriverError):
    """The VM specification is invalid or asks for something the driver refuses to do."""

    status, code = 400, "bad_vm_spec"


class Unsupported(SpecError):
    """The specification is valid but this driver does not support it (yet)."""

    code = "vm_spec_unsupported"


class ConsoleUnreadable(DriverError):
    """The worker's account may not read a VM's console log (a host set-up problem)."""

    status, code = 500, "console_unreadable"
