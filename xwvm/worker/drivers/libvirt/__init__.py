"""The libvirt/QEMU backend, split by role: host (connection, errors), config (XML, one
field table per class in xmlfields), policy (hardening), network (guest network policy),
disk (overlays), guest (one domain), driver (the contract)."""

from xwvm.worker.drivers.libvirt.driver import LibvirtDriver

__all__ = ["LibvirtDriver"]
