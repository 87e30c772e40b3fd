"""Hypervisor drivers: one contract, the behaviour every backend shares, and one package
per backend of small primitives.

- ``base.py``: the :class:`Driver` contract and the lifecycle written once (naming,
  define, start, state, stop, destroy, leftovers, the probe's boot, the refusals);
- ``spec.py``: :class:`VMSpec` (one job's VM, hypervisor-neutral) and its validation;
- ``vm.py``: one VM as the base sees it (:class:`VMState`, the owner tag, the
  ``Guest`` primitives each backend's ``guest.py`` provides);
- ``console.py``: reading a guest's serial console; ``probe.py``: the probe guest;
- ``errors.py``: the only errors a driver raises;
- ``libvirt/``, ``virtualbox/``: the backends, each split by role (host, config, policy,
  network, disk, guest, driver).
"""

from __future__ import annotations

from pathlib import Path

from xwvm.protocol.vocab import HYPERVISORS
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
    """The driver called ``name`` (one of :data:`~xwvm.protocol.vocab.HYPERVISORS`);
    imported lazily, so a host without a hypervisor library can still run native jobs."""
    if name == "libvirt":
        from xwvm.worker.drivers.libvirt import LibvirtDriver

        return LibvirtDriver(worker_id, work_dir)
    if name == "virtualbox":
        from xwvm.worker.drivers.virtualbox import VirtualBoxDriver

        return VirtualBoxDriver(worker_id, work_dir)
    raise Unsupported(f"no hypervisor driver called {name!r} (have: {', '.join(HYPERVISORS)})")
