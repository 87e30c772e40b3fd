"""The VirtualBox backend through vboxapi, split by role: host (connection, the one place
COM/XPCOM errors are translated, session locks), config (machine settings), policy
(hardening), network (guest network policy), disk (immutable template, differencing
disks), guest (one machine), driver (the contract)."""

from xwvm.worker.drivers.virtualbox.driver import VirtualBoxDriver

__all__ = ["VirtualBoxDriver"]
