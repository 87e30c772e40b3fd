#!/usr/bin/env python3
"""`make demo`: a server and a worker on loopback, and the most complete job xwvm runs today.

Today that is a native job (a Monte Carlo estimate of pi, with an input file); it becomes a
ROOT macro in a VM made from the ROOT template once VM jobs land. Every step is the real
CLI, printed before it runs, so the output doubles as a tour.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "demo-run"
XWVM = str(Path(sys.executable).parent / "xwvm")
ENV = {**os.environ, "XWVM_CONFIG_DIR": str(RUN / "client"), "PYTHONUNBUFFERED": "1"}


def sh(*args: str, show: bool = True) -> str:
    if show:
        print(f"$ xwvm {' '.join(args)}", flush=True)
    proc = subprocess.run([XWVM, *args], env=ENV, capture_output=True, text=True, cwd=RUN)
    if proc.returncode != 0:
        sys.exit(f"demo failed at 'xwvm {' '.join(args)}':\n{proc.stdout}{proc.stderr}")
    if show and proc.stdout.strip():
        print("  " + proc.stdout.strip().replace("\n", "\n  "), flush=True)
    return proc.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def background(args: list[str], log: str) -> subprocess.Popen[bytes]:
    with open(RUN / log, "wb") as out:
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


def main() -> None:
    shutil.rmtree(RUN, ignore_errors=True)
    RUN.mkdir()
    (RUN / "admin.pw").write_text("demo-admin-password\n")
    (RUN / "params.json").write_text(json.dumps({"seed": 42, "samples": 200000}))
    shutil.copy(ROOT / "demo" / "pi.py", RUN / "pi.py")
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        sh("server", "init", "--data-dir", "server", "--admin-password-file", "admin.pw")
        print(f"$ xwvm server run --data-dir server --bind 127.0.0.1:{port} &")
        procs.append(background(["server", "run", "--data-dir", "server", "--bind",
                                 f"127.0.0.1:{port}"], "server.log"))
        wait_ready(url, RUN / "server" / "ca.pem")
        sh("login", "--server", url, "--ca", "server/ca.pem", "--user", "admin",
           "--password-file", "admin.pw")
        sh("app", "send", "pi", "--file", "pi.py")
        sh("worker", "enroll", "-o", "worker.cred")
        print("$ xwvm worker run --credential worker.cred --work-dir worker &")
        procs.append(background(["worker", "run", "--credential", "worker.cred",
                                 "--work-dir", "worker", "--name", "demo-worker",
                                 "--hypervisor", "none"],
                                "worker.log"))
        print("$ xwvm submit pi --input params.json --wait -- demo")
        out = sh("submit", "pi", "--input", "params.json", "--wait", "--timeout", "300",
                 "--format", "json", "--", "demo", show=False)
        job = json.loads(out)[0]
        sh("works", job["uid"])
        sh("results", job["uid"], "-o", "results")
        result = json.loads((RUN / "results" / "pi.json").read_text())
        print(f"\nJob {job['uid']} {job['status']} on worker {job['host']}:")
        print(f"  stdout: {(RUN / 'results' / 'stdout.txt').read_text().strip()}")
        print(f"  pi.json: pi = {result['pi']:.5f} ({result['inside']} of "
              f"{result['samples']} samples inside the quarter circle)")
        print(f"\nEverything the demo made is in {RUN}")
    finally:
        for p in reversed(procs):
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(timeout=30)


if __name__ == "__main__":
    main()
