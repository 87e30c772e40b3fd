"""Host-side VM start with the libvirt driver: template cached -> domain running.

Per run: the driver's prepare_disk (qemu-img overlay), define (hardened XML + defineXML)
and start, beside libvirt's own createXML of the same XML in the same run (the floor,
through the driver's host: every libvirt error translated). Then overlay creation on a 1 GB
and a 20 GB sparse template. Needs root and scripts/install-vm-host.sh.

    .venv/bin/python bench/vm_start.py [--runs 20] [--markdown]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from xwvm.worker.drivers import VMSpec
from xwvm.worker.drivers.libvirt import LibvirtDriver
from xwvm.worker.drivers.libvirt import disk as vdisk
from xwvm.worker.drivers.libvirt.guest import Guest


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="xwvm-bench-", dir="/var/tmp"))
    root.chmod(0o711)
    try:
        rows = run(root, args.runs)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.markdown:
        print("| what | p50 ms | p95 ms |\n|---|---:|---:|")
        for name, vals in rows:
            print(f"| {name} | {pct(vals, 50) * 1000:.0f} | {pct(vals, 95) * 1000:.0f} |")
    else:
        for name, vals in rows:
            print(f"{name:55s} p50 {pct(vals, 50) * 1000:7.1f} ms  "
                  f"p95 {pct(vals, 95) * 1000:7.1f} ms  (n={len(vals)})")


def run(root: Path, runs: int) -> list[tuple[str, list[float]]]:
    template = root / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(template), "1G"], check=True)
    template.chmod(0o644)
    drv = LibvirtDriver("bench", root)
    drv.cleanup_leftovers()
    rows = start_times(drv, template, runs)
    rows += [(f"overlay on a {size} GB sparse raw template", overlay_times(root, size, runs))
             for size in (1, 20)]
    drv.cleanup_leftovers()
    return rows


def start_times(drv: LibvirtDriver, template: Path, runs: int
                ) -> list[tuple[str, list[float]]]:
    """Our start (overlay, define, start) against libvirt's createXML of the same XML.

    Everything goes through the driver (its errors translated): define() and start() as the
    worker calls them, the floor through the driver's host."""
    probe = drv.probe()
    assert probe.usable, probe.reason
    ours: list[float] = []
    parts: dict[str, list[float]] = {"overlay": [], "define (XML + defineXML)": [],
                                     "start": []}
    xml_only: list[float] = []
    floor: list[float] = []
    for i in range(runs):
        spec = VMSpec(job_uid=f"run{i}", worker_id="bench", base_image=template,
                      base_format="qcow2", memory_mb=128)
        steps = _our_start(drv, spec)
        ours.append(sum(steps))
        for name, dt in zip(parts, steps, strict=True):
            parts[name].append(dt)
        t0 = time.perf_counter()
        xml = drv.domain_xml(spec, probe.accel or "tcg")
        xml_only.append(time.perf_counter() - t0)
        floor.append(_floor(drv, spec, xml))
    rows = [("ours: overlay + define + start (template cached)", ours),
            ("libvirt createXML of the same XML (floor)", floor),
            ("ours minus floor (per run)", [a - b for a, b in zip(ours, floor, strict=True)])]
    rows += [(f"  of which {name}", vals) for name, vals in parts.items()]
    return rows + [("  the XML alone (domain_xml)", xml_only)]


def _our_start(drv: LibvirtDriver, spec: VMSpec) -> list[float]:
    """prepare_disk, define and start of ``spec`` as the worker calls them, each timed;
    then the VM destroyed."""
    steps: list[Callable[[], object]] = [lambda: drv.prepare_disk(spec),
                                         lambda: drv.define(spec),
                                         lambda: drv.start(spec.job_uid)]
    times = []
    for step in steps:
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    drv.destroy(spec.job_uid)
    return times


def _floor(drv: LibvirtDriver, spec: VMSpec, xml: str) -> float:
    """libvirt's createXML of ``xml`` (its overlay made beforehand), timed; then removed."""
    drv.prepare_disk(spec)
    t0 = time.perf_counter()
    transient = Guest(drv.host.create_transient(xml))
    elapsed = time.perf_counter() - t0
    transient.power_off()
    drv.destroy(spec.job_uid)
    return elapsed


def overlay_times(root: Path, size: int, runs: int) -> list[float]:
    """Making a qcow2 overlay on a sparse raw template of ``size`` GB."""
    big = root / f"sparse-{size}G.raw"
    with big.open("wb") as f:
        f.truncate(size << 30)
    times = []
    for i in range(runs):
        overlay = root / f"o{size}-{i}.qcow2"
        t0 = time.perf_counter()
        vdisk.create_overlay(big, "raw", overlay, size << 30)
        times.append(time.perf_counter() - t0)
        overlay.unlink()
    return times


if __name__ == "__main__":
    main()
