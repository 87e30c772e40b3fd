"""Owns the template transfer benchmark: download throughput against curl, cache-hit cost,
and the bytes an incremental update transfers.

A real server (gunicorn, TLS on loopback) serves a template whose disk is a
sparse-ish random file (half random 1 MiB blocks, half zeros). In the same run:

- ``curl`` fetches the artifact URL (same CA pin, same bearer header) into a file;
- the worker's image cache fetches it into an empty cache (sha256 verified while it
  streams, renamed into place): the number the goal (>= 0.8 of curl) is about;
- a warm cache serves the same template again (signature check, lock, recency);
- a new version with 1% of its 4 MiB chunks changed is fetched incrementally.

    .venv/bin/python bench/template_transfer.py [--size-mib 512] [--runs 5] [--markdown]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.processes import ServerProcess  # noqa: E402
from xwvm import signing  # noqa: E402
from xwvm.client.sdk import Client  # noqa: E402
from xwvm.server.services.uploads import MANIFEST_CHUNK  # noqa: E402
from xwvm.worker.images import ImageCache  # noqa: E402

MiB = 1024 * 1024
GOAL = 0.8


def sparse_random(path: Path, size: int) -> None:
    """Alternating runs of random and zero 1 MiB blocks (a disk image's typical mix)."""
    with open(path, "wb") as f:
        for i in range(size // MiB):
            f.write(os.urandom(MiB) if (i * 7919) % 10 < 5 else bytes(MiB))


def change_chunks(src: Path, dest: Path, fraction: float) -> int:
    """Copy ``src`` with ``fraction`` of its chunks altered (spread evenly); how many."""
    shutil.copyfile(src, dest)
    chunks = math.ceil(src.stat().st_size / MANIFEST_CHUNK)
    n = max(1, round(chunks * fraction))
    with open(dest, "r+b") as f:
        for k in range(n):
            f.seek((k * chunks // n) * MANIFEST_CHUNK + 4096)
            f.write(os.urandom(512))
    return n


def push(c: Client, key: Ed25519PrivateKey, name: str, version: str, disk: Path) -> dict:
    up = c.upload_file(disk)
    t = c.create_template({"name": name, "version": version, "artifacts": [
        {"role": "disk", "format": "raw", "upload": up["uid"]}]})
    sig = signing.sign(t["manifest"], key)
    c.sign_template(t["uid"], sig.public_key, sig.signature)
    return c.publish_template(t["uid"])


def desc_of(view: dict) -> dict:
    keys = ("uid", "name", "version", "os", "arch", "cmdline", "shared_apps", "artifacts",
            "signatures", "manifest")
    return {k: view[k] for k in keys}


def curl_fetch(srv: ServerProcess, token: str, route: str, dest: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(["curl", "-sSf", "--cacert", str(srv.ca), "-H",
                    f"Authorization: Bearer {token}", "-o", str(dest),
                    f"{srv.url}/api/v1{route}"], check=True)
    return time.perf_counter() - t0


def cache_fetch(c: Client, root: Path, desc: dict, trusted: dict) -> float:
    shutil.rmtree(root, ignore_errors=True)
    cache = ImageCache(root, 1 << 40, trusted)
    t0 = time.perf_counter()
    with cache.use(c, desc):
        pass
    return time.perf_counter() - t0


@dataclass
class Measures:
    upload_s: float
    curl_s: list[float]
    ours_s: list[float]
    hit_ms: list[float]
    incr_s: float
    incr: Any  # the cache's last Transfer: bytes fetched and reused
    changed: int


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--hits", type=int, default=200)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    if not shutil.which("curl"):
        sys.exit("curl is not installed")
    size = args.size_mib * MiB
    with tempfile.TemporaryDirectory(prefix="xwvm-bench-tpl-") as tmp:
        root = Path(tmp)
        srv = ServerProcess(root / "srv").init().start()
        try:
            m = measure(srv, root, size, args.runs, args.hits)
        finally:
            srv.stop()
    report(table(m, size, args.size_mib, args.runs), m, args.markdown)


def measure(srv: ServerProcess, root: Path, size: int, runs: int, hits: int) -> Measures:
    """Push two versions, then fetch v1 with curl and a cold cache (interleaved), hit the
    warm cache ``hits`` times and fetch v2 incrementally."""
    c = srv.client()
    key = Ed25519PrivateKey.generate()
    trusted = {signing.key_id(key.public_key()): key.public_key()}
    v1, v2 = root / "v1.raw", root / "v2.raw"
    sparse_random(v1, size)
    changed = change_chunks(v1, v2, 0.01)
    t0 = time.perf_counter()
    t1 = push(c, key, "bench", "1", v1)
    upload_s = time.perf_counter() - t0
    d1, d2 = desc_of(t1), desc_of(push(c, key, "bench", "2", v2))
    route = d1["artifacts"][0]["path"]
    curl_s, ours_s = [], []
    for _ in range(runs):  # interleaved, so both see the same machine load
        curl_s.append(curl_fetch(srv, c.token, route, root / "curl.out"))
        (root / "curl.out").unlink()
        ours_s.append(cache_fetch(c, root / "cache", d1, trusted))
    cache = ImageCache(root / "cache", 1 << 40, trusted)
    hit_ms = []
    for _ in range(hits):
        h0 = time.perf_counter()
        with cache.use(c, d1):
            pass
        hit_ms.append((time.perf_counter() - h0) * 1000)
    i0 = time.perf_counter()
    with cache.use(c, d2):
        pass
    return Measures(upload_s, curl_s, ours_s, sorted(hit_ms), time.perf_counter() - i0,
                    cache.transfers[-1], changed)


def table(m: Measures, size: int, size_mib: int, runs: int) -> list[tuple[str, str]]:
    curl_mbs = size / MiB / statistics.median(m.curl_s)
    ours_mbs = size / MiB / statistics.median(m.ours_s)
    hit_ms, incr = m.hit_ms, m.incr
    return [
        ("artifact", f"{size_mib} MiB raw disk, half random 1 MiB blocks, half zeros"),
        ("upload (resumable, 8 MiB chunks)", f"{size / MiB / m.upload_s:.0f} MiB/s"),
        (f"curl download, median / best of {runs}",
         f"{curl_mbs:.0f} / {size / MiB / min(m.curl_s):.0f} MiB/s"),
        ("image cache download, verified, median / best",
         f"{ours_mbs:.0f} / {size / MiB / min(m.ours_s):.0f} MiB/s"),
        ("ratio image cache / curl, medians / bests",
         f"{ours_mbs / curl_mbs:.2f} / {min(m.curl_s) / min(m.ours_s):.2f} (goal >= {GOAL})"),
        ("cache hit, p50 / p95", f"{hit_ms[len(hit_ms) // 2]:.2f} / "
                                 f"{hit_ms[int(len(hit_ms) * 0.95)]:.2f} ms"),
        (f"incremental update, {m.changed} of {math.ceil(size / MANIFEST_CHUNK)} chunks "
         "changed",
         f"{incr.fetched / MiB:.1f} MiB fetched, {incr.reused / MiB:.0f} MiB reused, "
         f"{m.incr_s:.2f} s ({incr.fetched / size:.1%} of a full download)"),
    ]


def report(rows: list[tuple[str, str]], m: Measures, markdown: bool) -> None:
    machine = f"{platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()}"
    if markdown:
        print("| measure | value |\n|---|---|")
        for k, v in rows:
            print(f"| {k} | {v} |")
        print(f"\n{machine}; runs: curl {', '.join(f'{s:.2f}' for s in m.curl_s)} s, "
              f"cache {', '.join(f'{s:.2f}' for s in m.ours_s)} s")
    else:
        for k, v in rows:
            print(f"{k:55} {v}")
        print(machine)


if __name__ == "__main__":
    main()
