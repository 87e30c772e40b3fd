"""Owns the context ISO build benchmark: p50/p95 build time and ISO size for a typical job.

A typical context: 2 SSH keys, 10 environment variables, a CA PEM, 3 inputs.
References measured in the same run: packing the same files into an in-memory
tar (a floor: no ISO layout at all) and, when installed, ``genisoimage`` run
as a subprocess on the same files (what a shell-script worker would do).

    .venv/bin/python bench/context_iso.py [--runs 200] [--markdown]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import shutil
import statistics
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from contextualizer import (
    InputRef,
    JobContext,
    JobSpec,
    Limits,
    Payload,
    build_iso,
    build_job_context,
    read_iso,
)
from contextualizer.seed import render_seed

GOAL_MS = 20.0


def typical_context() -> JobContext:
    keys = [
        ed25519.Ed25519PrivateKey.from_private_bytes(bytes(32)).public_key(),
        ec.derive_private_key(42, ec.SECP256R1()).public_key(),
    ]
    ssh_keys = [
        k.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
        + f" user{i}@lab"
        for i, k in enumerate(keys)
    ]
    ca_pem = "-----BEGIN CERTIFICATE-----\n" + ("MIIB" * 16 + "\n") * 12
    ca_pem += "-----END CERTIFICATE-----\n"
    user = {
        "ssh_authorized_keys": ssh_keys,
        "env": {f"VAR_{i}": f"value-{i}" * 4 for i in range(10)},
        "network": "server",
    }
    job = JobSpec(
        job_uid="5f0c2a8e-1b7d-4e3f-9a6c-0d1e2f3a4b5c",
        owner="alice",
        app="root",
        server_url="https://xwvm.example.org:4443",
        server_ca_pem=ca_pem,
        credential="xwcred-" + "0123456789abcdef" * 4,
        payload=Payload(
            command="root",
            args=("-b", "-q", "fit.C"),
            inputs=tuple(InputRef(f"d-{i}", f"input{i}.root", f"{i:x}" * 64) for i in range(3)),
        ),
        limits=Limits(wall_clock_seconds=3600, cpus=2, memory_mb=2048, disk_mb=8192),
    )
    return build_job_context(user, job)


def tar_floor(ctx: JobContext) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in sorted(render_seed(ctx).items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def genisoimage_reference(ctx: JobContext, tool: str) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp, "root")
        for name, data in render_seed(ctx).items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
        iso = Path(tmp, "out.iso")
        subprocess.run(
            [tool, "-quiet", "-V", "CIDATA", "-J", "-r", "-o", str(iso), str(root)], check=True
        )
        return iso.read_bytes()


def timed(fn: Callable[[], bytes], runs: int) -> tuple[list[float], int]:
    size = len(fn())  # warm-up
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return samples, size


def p(samples: list[float], q: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args()

    ctx = typical_context()
    assert read_iso(build_iso(ctx)) == ctx
    rows = [("contextualizer.build_iso (pycdlib)", *timed(lambda: build_iso(ctx), args.runs))]
    rows.append(
        (
            "render_seed only (YAML + JSON, no packing)",
            *timed(lambda: b"".join(render_seed(ctx).values()), args.runs),
        )
    )
    rows.append(
        (
            "reference: render + tar of the same files, in memory",
            *timed(lambda: tar_floor(ctx), args.runs),
        )
    )
    tool = shutil.which("genisoimage")
    if tool:
        ref_runs = min(args.runs, 50)
        rows.append(
            (
                f"reference: render + write files + genisoimage -J -r ({ref_runs} runs)",
                *timed(lambda: genisoimage_reference(ctx, tool), ref_runs),
            )
        )

    print(f"machine: {os.cpu_count()} CPUs, {cpu_model()}, Python {platform.python_version()}")
    print(f"runs: {args.runs}, goal: p95 < {GOAL_MS} ms for build_iso")
    if args.markdown:
        print("\n| what | p50 ms | p95 ms | size bytes |\n|---|---:|---:|---:|")
    for name, samples, size in rows:
        p50, p95 = statistics.median(samples), p(samples, 95)
        if args.markdown:
            print(f"| {name} | {p50:.2f} | {p95:.2f} | {size} |")
        else:
            print(f"{name:55s} p50 {p50:7.2f} ms  p95 {p95:7.2f} ms  size {size} bytes")
    ok = p(rows[0][1], 95) < GOAL_MS
    print(f"\nbuild_iso p95 {'meets' if ok else 'MISSES'} the {GOAL_MS:.0f} ms goal")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
