#!/usr/bin/env python3
"""`make demo`: a server and a worker on loopback, and the main job of xwvm: a ROOT macro
run in a VM made from the ROOT template, its histogram printed from the result.

Every step is the real CLI, printed before it runs, so the output doubles as a tour. The
ROOT template is built once from templates/root.yaml (offline, from Debian's packages
and PyPI's `root` wheel: a few minutes) and kept in /var/cache/xwvm-test for reruns.
VMs run under QEMU/libvirt (software emulation when KVM is not usable).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import uproot

from xwvm import signing

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "demo-run"
XWVM = str(Path(sys.executable).parent / "xwvm")
ENV = {**os.environ, "XWVM_CONFIG_DIR": str(RUN / "client"), "PYTHONUNBUFFERED": "1"}


def sh(*args: str, show: bool = True, timeout: float = 1800) -> str:
    if show:
        print(f"$ xwvm {' '.join(args)}", flush=True)
    proc = subprocess.run([XWVM, *args], env=ENV, capture_output=True, text=True, cwd=RUN,
                          timeout=timeout)
    if proc.returncode != 0:
        sys.exit(f"demo failed at 'xwvm {' '.join(args)}':\n{proc.stdout}{proc.stderr}")
    if show and proc.stdout.strip():
        print("  " + proc.stdout.strip().replace("\n", "\n  "), flush=True)
    return proc.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def background(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen([XWVM, *args], env=ENV, cwd=RUN, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def wait_ready(url: str, ca: Path) -> None:
    import requests
    for _ in range(150):
        try:
            requests.get(f"{url}/api/v1/health", verify=str(ca), timeout=2)
            return
        except requests.RequestException:
            time.sleep(0.2)
    sys.exit(f"the server did not start; see {RUN / 'server.log'}")


def root_image() -> Path:
    from xwvm.client.imagebuild.cache import built_image
    print("# the ROOT template image (built once, then reused):", flush=True)
    started = time.monotonic()
    image = built_image(ROOT / "templates" / "root.yaml")
    print(f"  {image} ({time.monotonic() - started:.0f} s)", flush=True)
    return image


def events(path: Path) -> None:
    """A toy Z → μμ sample: a Breit-Wigner peak on a falling background."""
    rng = np.random.default_rng(2024)
    peak = 91.19 + 2.49 / 2 * rng.standard_cauchy(4000)
    background = 60 + rng.exponential(25.0, 2000)
    mass = np.concatenate([peak, background])
    with uproot.recreate(path) as f:  # a TTree (assigning a dict would write an RNTuple)
        f.mktree("events", {"mass": "f8"}).extend({"mass": mass[(mass > 50) & (mass < 130)]})


def show_histogram(path: Path) -> None:
    with uproot.open(path) as f:
        h = f["mass"]
        values, edges = h.values(), h.axis().edges()
    top = values.max() or 1
    print(f"\nhist.root: '{h.title}', {int(values.sum())} entries")
    for v, lo in zip(values, edges[:-1], strict=True):
        print(f"  {lo:6.1f} GeV |{'#' * int(round(50 * v / top)):<50}| {int(v)}")


def main() -> None:
    shutil.rmtree(RUN, ignore_errors=True)
    RUN.mkdir()
    # QEMU runs as the libvirt-qemu user: VM files live in a folder it can traverse.
    vm_dir = Path(tempfile.mkdtemp(prefix="xwvm-demo-", dir="/var/tmp"))
    vm_dir.chmod(0o711)
    image = root_image()
    (RUN / "admin.pw").write_text("demo-admin-password\n")
    shutil.copy(ROOT / "demo" / "hist.C", RUN / "hist.C")
    events(RUN / "events.root")
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        sh("server", "init", "--data-dir", "server", "--admin-password-file", "admin.pw")
        print(f"$ xwvm server run --data-dir server --bind 127.0.0.1:{port} &")
        procs.append(background(["server", "run", "--data-dir", "server", "--bind",
                                 f"127.0.0.1:{port}"], RUN / "server.log"))
        wait_ready(url, RUN / "server" / "ca.pem")
        sh("login", "--server", url, "--ca", "server/ca.pem", "--user", "admin",
           "--password-file", "admin.pw")
        sh("admin", "keygen", "-o", "keys")
        publish_template(image)
        procs.append(start_worker(vm_dir))
        run_job()
        print(f"\nEverything the demo made is in {RUN} (logs: server.log, worker.log)")
    finally:
        stop(procs)
        shutil.rmtree(vm_dir, ignore_errors=True)


def publish_template(image: Path) -> None:
    """Push the built image, sign it with the admin's key and publish it."""
    sh("template", "push", str(image))
    manifest = json.loads((image / "manifest.json").read_text())
    ref = f"{manifest['name']}:{manifest['version']}"
    sh("template", "sign", ref, "--key", f"keys/{signing.PRIVATE_KEY_FILE}")
    sh("template", "publish", ref)


def start_worker(vm_dir: Path) -> subprocess.Popen[bytes]:
    sh("worker", "enroll", "-o", "worker.cred")
    print(f"$ xwvm worker run --credential worker.cred --work-dir {vm_dir}/worker "
          "--hypervisor libvirt --trusted-key keys/<public key> &")
    return background(["worker", "run", "--credential", "worker.cred", "--work-dir",
                       str(vm_dir / "worker"), "--name", "demo-worker",
                       "--hypervisor", "libvirt", "--trusted-key",
                       f"keys/{signing.PUBLIC_KEY_FILE}"], RUN / "worker.log")


def run_job() -> None:
    """The ROOT macro as a VM job, waited for; its results fetched and shown."""
    print("$ xwvm submit --template root --macro hist.C --input events.root --wait")
    started = time.monotonic()
    out = sh("submit", "--template", "root", "--macro", "hist.C", "--input",
             "events.root", "--wall-clock", "30m", "--wait", "--timeout", "1800",
             "--format", "json", show=False, timeout=1900)
    job = json.loads(out)[0]
    sh("works", job["uid"])
    sh("results", job["uid"], "-o", "results")
    print(f"\nJob {job['uid']} {job['status']} in {time.monotonic() - started:.0f} s "
          f"(VM boot, ROOT macro, results upload, VM removed).")
    print(f"  stdout: {(RUN / 'results' / 'stdout.txt').read_text().strip()}")
    show_histogram(RUN / "results" / "hist.root")


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """The background processes, last started first: TERM, then KILL after a minute."""
    for p in reversed(procs):
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
