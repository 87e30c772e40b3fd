"""Guest boot to nested-worker-ready under this host's acceleration (TCG here).

Boots the base appliance (templates/base.yaml, built or taken from the build cache) with
a context ISO through the libvirt driver and times, from the domain start, the serial
console markers: `xwvm-init: start` (kernel + initramfs done, PID 1 runs),
`xwvm-init: context found`, and `xwvm-agent: hardening ok` (the nested worker is ready
to fetch its payload). Reference in the same run: the tiny busybox test guest's time to
its first userland marker (kernel + initramfs floor). Needs root and
scripts/install-vm-host.sh.

    .venv/bin/python bench/vm_boot.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from contextualizer import JobSpec, Limits, Payload, build_job_context, write_iso  # noqa: E402
from tests.support.guest import build_guest  # noqa: E402
from xwvm.client.imagebuild.cache import built_image  # noqa: E402
from xwvm.protocol.vocab import NetworkPolicy  # noqa: E402
from xwvm.worker.drivers import VMSpec  # noqa: E402
from xwvm.worker.drivers.libvirt import LibvirtDriver  # noqa: E402

MARKERS = ("xwvm-init: start", "xwvm-init: context found", "xwvm-agent: hardening ok")
GUEST_MARKER = "XWVM-BENCH-UP"


def boot(drv: LibvirtDriver, spec: VMSpec, markers: tuple[str, ...],
         timeout: float = 180) -> dict[str, float]:
    drv.define(spec)
    seen: dict[str, float] = {}
    t0 = time.monotonic()
    drv.start(spec.job_uid)
    try:
        while len(seen) < len(markers) and time.monotonic() - t0 < timeout:
            log = drv.console_log(spec.job_uid)
            for m in markers:
                if m not in seen and m in log:
                    seen[m] = time.monotonic() - t0
            time.sleep(0.05)
    finally:
        drv.destroy(spec.job_uid)
    return seen


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    image = built_image(Path(__file__).resolve().parent.parent / "templates" / "base.yaml")
    manifest = json.loads((image / "manifest.json").read_text())
    root = Path(tempfile.mkdtemp(prefix="xwvm-bench-boot-", dir="/var/tmp"))
    root.chmod(0o711)
    work = root / "images"
    shutil.copytree(image, work, ignore=shutil.ignore_patterns("*.raw", "*.vdi", ".work"))
    for p in work.iterdir():
        p.chmod(0o644)
    guest = build_guest(f"echo {GUEST_MARKER}\n", root / "guest")
    empty = root / "empty.qcow2"  # the busybox guest runs from its initramfs
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(empty), "64M"], check=True)
    empty.chmod(0o644)
    drv = LibvirtDriver("bench", root)
    drv.cleanup_leftovers()
    print(f"probe: {drv.probe().reason}")
    rows: dict[str, list[float]] = {m: [] for m in (*MARKERS, "busybox guest: userland")}
    try:
        for i in range(args.runs):
            iso = root / f"ctx{i}.iso"
            ctx = build_job_context({}, JobSpec(
                job_uid=f"bench{i}", owner="bench", app="base",
                server_url="https://xwvm-server:9", server_ca_pem="-----BEGIN CERTIFICATE-----",
                credential="none", payload=Payload(command="true"),
                limits=Limits(wall_clock_seconds=60, cpus=1, memory_mb=512, disk_mb=1)))
            write_iso(ctx, iso)
            spec = VMSpec(job_uid=f"bench{i}", worker_id="bench",
                          base_image=work / "disk.qcow2", base_format="qcow2", memory_mb=512,
                          context_iso=iso, kernel=work / "vmlinuz", initrd=work / "initrd.img",
                          cmdline=manifest["cmdline"], network=NetworkPolicy.SERVER,
                          server_endpoint=("127.0.0.1", 9))
            for m, t in boot(drv, spec, MARKERS).items():
                rows[m].append(t)
            gspec = VMSpec(job_uid=f"guest{i}", worker_id="bench", base_image=empty,
                           base_format="qcow2", memory_mb=256, kernel=guest.kernel,
                           initrd=guest.initrd, cmdline=guest.cmdline)
            t = boot(drv, gspec, (GUEST_MARKER,)).get(GUEST_MARKER)
            if t is not None:
                rows["busybox guest: userland"].append(t)
    finally:
        drv.cleanup_leftovers()
        shutil.rmtree(root, ignore_errors=True)
    print("| from domain start to | p50 s | min s | max s | runs |\n|---|---:|---:|---:|---:|")
    for m, vals in rows.items():
        if vals:
            print(f"| `{m}` | {statistics.median(vals):.1f} | {min(vals):.1f} | "
                  f"{max(vals):.1f} | {len(vals)} |")


if __name__ == "__main__":
    main()
