"""Hypervisor drivers: one contract and the behaviour every backend shares (base.py, with
spec.py, console.py, probe.py, errors.py), one package per backend of small primitives."""

from __future__ import annotations

from pathlib import Path

from xwvm.worker.drivers.base import Driver, VMSpec, VMState
from xwvm.worker.drivers.errors import (
    DriverError,
    HypervisorUnavailable,
    SpecError,
    Unsupported,
    VMExists,
    VMNotFound,
)

__all__ = ["Driver", "DriverError", "HypervisorUnavailable",
           "SpecError", "Unsupported", "VMExists", "VMNotFound", "VMSpec", "VMState",
           "make_driver"]


def make_driver(name: str, worker_id: str, work_dir: Path) -> Driver:
    """The driver called ``name`` ("libvirt" or "virtualbox"); imported lazily, so a host
    without a hypervisor library can still run native jobs."""
    if name == "libvirt":
        from xwvm.worker.drivers.libvirt import LibvirtDriver

        return LibvirtDriver(worker_id, work_dir)
    if name == "virtualbox":
        from xwvm.worker.drivers.virtualbox import VirtualBoxDriver

        return VirtualBoxDriver(worker_id, work_dir)
    raise Unsupported(f"no hypervisor driver called {name!r} (have: libvirt, virtualbox)")
