"""What a host offers: OS, architecture, CPUs, memory and free disk, and whether it runs
native jobs (outside a VM) at all."""

from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path
from typing import Any

from xwvm import __version__

_ARCH = {"amd64": "x86_64", "x86-64": "x86_64", "arm64": "aarch64", "i686": "x86",
         "i386": "x86"}


def normalize_arch(machine: str) -> str:
    m = machine.lower()
    return _ARCH.get(m, m)


def memory_mb() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def collect(work_dir: Path, name: str, shared_apps: list[str]) -> dict[str, Any]:
    return {"name": name, "os": platform.system().lower(),
            "arch": normalize_arch(platform.machine()), "cpus": os.cpu_count() or 1,
            "memory_mb": memory_mb(), "disk_mb": shutil.disk_usage(work_dir).free // 2**20,
            "shared_apps": sorted(set(shared_apps)), "hypervisors": {},
            "version": __version__}


def native_entry(allowed: bool) -> dict[str, Any]:
    """The host record's ``hypervisors["native"]``: whether native jobs (run on the host
    itself, outside any VM) may be sent here; the scheduler sends none when not."""
    reason = "its owner allows native jobs" if allowed else \
        "VM jobs only (the worker was not started with --allow-native)"
    return {"usable": allowed, "accel": None, "reason": reason}
