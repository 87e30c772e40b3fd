"""What a host offers: OS, architecture, CPUs, memory and free disk, and whether it runs
native jobs (outside a VM) at all; and the ceilings its owner sets on any one VM."""

from __future__ import annotations

import dataclasses
import os
import platform
import shutil
from collections.abc import Iterable
from pathlib import Path

from xwvm import __version__
from xwvm.protocol.messages import HostFacts, HypervisorProbe, VMCeilings
from xwvm.protocol.platforms import normalize_arch

__all__ = ["DEFAULT_MAX_VM_DISK_MB", "MIN_VM_MEMORY_MB", "VMCeilings", "collect", "memory_mb",
           "native_entry", "vm_ceilings", "vm_entry"]


def memory_mb() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def collect(work_dir: Path, name: str, shared_apps: list[str]) -> HostFacts:
    """This host's facts; the worker adds its hypervisors' probes and cached templates."""
    return HostFacts(name=name, os=platform.system().lower(),
                     arch=normalize_arch(platform.machine()), cpus=os.cpu_count() or 1,
                     memory_mb=memory_mb(), disk_mb=shutil.disk_usage(work_dir).free // 2**20,
                     shared_apps=tuple(sorted(set(shared_apps))), version=__version__)


def native_entry(allowed: bool, sandbox_problem: str | None = None,
                 app_keys: Iterable[str] = (), unsigned_apps: bool = False) -> HypervisorProbe:
    """The host record's ``hypervisors["native"]``: whether native jobs (run on the host
    itself, outside any VM, in the bubblewrap sandbox) may be sent here; the scheduler
    sends none when not. ``sandbox_problem``: why this host cannot sandbox them (None:
    the sandbox's self-test passed). ``app_keys``: the ids of the keys whose app signatures
    this worker trusts (the scheduler sends it only apps one of them signed), unless its
    owner runs ``unsigned_apps``."""
    if not allowed:
        return HypervisorProbe(
            usable=False, reason="VM jobs only (the worker was not started with --allow-native)")
    if sandbox_problem is not None:
        return HypervisorProbe(usable=False,
                               reason=f"native jobs refused: no sandbox ({sandbox_problem})")
    return HypervisorProbe(
        usable=True, reason="its owner allows native jobs; they run in the bubblewrap sandbox",
        app_keys=tuple(sorted(app_keys)), unsigned_apps=unsigned_apps)


NO_TEMPLATE_KEY = ("VM jobs refused: this worker trusts no template key (give --trusted-key): "
                   "it would boot no template")


def vm_entry(probe: HypervisorProbe, template_keys: Iterable[str]) -> HypervisorProbe:
    """A hypervisor's entry as the worker advertises it: with ``template_keys``, the ids
    of the keys whose template signatures it trusts (the scheduler sends it only VM jobs
    whose template one of them signed). A worker that trusts none would refuse every
    template: its hypervisor is advertised as unusable, so that no VM job is sent here."""
    keys = tuple(sorted(set(template_keys)))
    if not probe.usable:
        return probe
    if not keys:
        return dataclasses.replace(probe, usable=False, reason=NO_TEMPLATE_KEY,
                                   template_keys=())
    return dataclasses.replace(probe, template_keys=keys)


# --- the owner's ceilings on any VM (issue 13, hole 10) ---------------------------------

DEFAULT_MAX_VM_DISK_MB = 20 * 1024
MIN_VM_MEMORY_MB = 256  # what a VM gets at least (the appliance boots in less)


def vm_ceilings(work_dir: Path, memory: int | None = None, cpus: int | None = None,
                disk: int | None = None, cpu_percent: int = 100) -> VMCeilings:
    """The owner's ceilings, defaults filled in so the host stays usable beside a VM: half
    the RAM, every CPU but one, DEFAULT_MAX_VM_DISK_MB; never more than the host has."""
    host_mem, host_cpus = memory_mb(), os.cpu_count() or 1
    free_disk = shutil.disk_usage(work_dir).free // 2**20
    mem = memory if memory is not None else max(host_mem // 2, MIN_VM_MEMORY_MB)
    ncpu = cpus if cpus is not None else max(host_cpus - 1, 1)
    disk_mb = disk if disk is not None else DEFAULT_MAX_VM_DISK_MB
    return VMCeilings(memory_mb=min(mem, host_mem) if host_mem else mem,
                      cpus=min(ncpu, host_cpus), disk_mb=min(disk_mb, free_disk),
                      cpu_percent=min(max(cpu_percent, 1), 100))
