"""Host-side VM start with the libvirt driver: template cached -> domain running.

Per run: overlay (qemu-img) + hardened XML + defineXML + create, beside libvirt's own
createXML of the same XML in the same run (the floor). Then overlay creation on a 1 GB
and a 20 GB sparse template. Needs root and scripts/install-vm-host.sh.

    .venv/bin/python bench/vm_start.py [--runs 20] [--markdown]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from xwvm.worker.drivers import VMSpec
from xwvm.worker.drivers.libvirt import LibvirtDriver
from xwvm.worker.drivers.libvirt import disk as vdisk


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
    """Our start (overlay, XML, define, start) against libvirt's createXML of the same XML."""
    probe = drv.probe()
    assert probe.usable, probe.reason
    conn = drv.host.conn()
    ours: list[float] = []
    parts: dict[str, list[float]] = {"overlay": [], "xml": [], "define": [], "start": []}
    floor: list[float] = []
    for i in range(runs):
        spec = VMSpec(job_uid=f"run{i}", worker_id="bench", base_image=template,
                      memory_mb=128)
        t0 = time.perf_counter()
        drv.prepare_disk(spec)
        t1 = time.perf_counter()
        xml = drv.domain_xml(spec, probe.accel or "tcg")
        t2 = time.perf_counter()
        dom = drv.host.define(xml)
        t3 = time.perf_counter()
        dom.create()
        t4 = time.perf_counter()
        ours.append(t4 - t0)
        for name, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            parts[name].append(dt)
        drv.destroy(spec.job_uid)
        # The floor: the same XML (its own overlay made beforehand) through createXML.
        drv.prepare_disk(spec)
        t5 = time.perf_counter()
        transient = conn.createXML(xml, 0)
        floor.append(time.perf_counter() - t5)
        transient.destroy()
        drv.destroy(spec.job_uid)
    rows = [("ours: overlay + XML + define + start (template cached)", ours),
            ("libvirt createXML of the same XML (floor)", floor),
            ("ours minus floor (per run)", [a - b for a, b in zip(ours, floor, strict=True)])]
    return rows + [(f"  of which {name}", vals) for name, vals in parts.items()]


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
