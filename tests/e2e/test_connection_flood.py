"""A hostile payload floods the server address from inside a real VM (issue 13, hole 4).

Each guest connection to the server address used to make QEMU start one ``socat`` on the
host: 200 connections, 200 host processes (~900 MB RSS) outside the VM's memory cap. Now
each VM has one forwarder in the worker process with a connection cap: the guest's flood
leaves a bounded number of host processes, and once the flood ends the job's own agent
still reaches the server.

A real libvirt/QEMU guest (the tiny busybox test guest, TCG): one VM boot, about a
minute. The "server" is an HTTP server on loopback.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.guest import NET_UP, Guest, Kernel, build_guest
from tests.support.lan import free_port, http_server, wait_listening
from tests.worker.drivers.conftest import kernel, qcow2_template, vm_host, vm_root  # noqa: F401
from xwvm.protocol.vocab import NetworkPolicy
from xwvm.worker.drivers import VMSpec, VMState
from xwvm.worker.drivers.libvirt import LibvirtDriver
from xwvm.worker.forwarder import MAX_CONNECTIONS

FLOOD = 200
BOOT_TIMEOUT_S = 240.0
# The cap, plus helpers of refused connections that are still exiting when sampled.
BOUND = MAX_CONNECTIONS + 16

GUEST = NET_UP + """\
i=0
while [ $i -lt {n} ]; do
  (sleep 45 | nc {addr} {port} >/dev/null 2>&1) &
  i=$((i+1))
done
sleep 20
echo "XWVM-FLOOD: held"
sleep 15
killall nc sleep 2>/dev/null
sleep 3
if printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 10 {addr} {port} | head -1 | grep -q HTTP/1
then echo "XWVM-AGENT: reach yes"; else echo "XWVM-AGENT: reach no"; fi
"""


def _host_helpers(marks: tuple[str, ...]) -> list[int]:
    """Pids of the host's socat processes whose command line names this VM (not QEMU,
    whose own command line holds the guestfwd)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if Path(argv[0]).name == "socat" and any(m in " ".join(argv) for m in marks):
            pids.append(int(entry.name))
    return pids


def _rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def _qemu_threads(name: str) -> int:
    pid_file = Path(f"/run/libvirt/qemu/{name}.pid")
    try:
        return len(os.listdir(f"/proc/{pid_file.read_text().strip()}/task"))
    except (OSError, ValueError):
        return 0


@pytest.fixture
def server_port() -> Iterator[int]:
    port = free_port()
    proc = http_server(port, "127.0.0.1")
    try:
        wait_listening("127.0.0.1", port)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_connection_flood_from_the_guest_spawns_bounded_host_processes(
        vm_root: Path, kernel: Kernel, qcow2_template: Path,  # noqa: F811
        server_port: int) -> None:
    work = vm_root / f"flood{os.getpid()}"
    work.mkdir()
    work.chmod(0o711)
    driver = LibvirtDriver(f"fl{os.getpid()}", work)
    spec0 = VMSpec(job_uid="flood", worker_id=driver.worker_id, base_image=qcow2_template,
                   memory_mb=256, network=NetworkPolicy.SERVER,
                   server_endpoint=("127.0.0.1", server_port))
    addr, port = driver.guest_endpoint(spec0) or ("", 0)
    gdir = vm_root / "guests"
    gdir.mkdir(exist_ok=True)
    gdir.chmod(0o755)
    guest: Guest = build_guest(GUEST.format(n=FLOOD, addr=addr, port=port), gdir,
                               kernel=kernel, name="flood")
    spec = VMSpec(**{**spec0.__dict__, "kernel": guest.kernel, "initrd": guest.initrd,
                     "cmdline": guest.cmdline})
    marks = (f"TCP:127.0.0.1:{server_port}", str(work))
    try:
        driver.define(spec)
        driver.start("flood")
        name = driver._name("flood")
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while "XWVM-FLOOD: held" not in driver.console_log("flood"):
            assert time.monotonic() < deadline, driver.console_log("flood")
            assert driver.state("flood") == VMState.RUNNING, driver.console_log("flood")
            time.sleep(0.5)
        most, rss, threads = 0, 0, 0
        for _ in range(10):  # while the guest holds its flood open
            pids = _host_helpers(marks)
            if len(pids) > most:
                most, rss = len(pids), _rss_kib(pids)
            threads = max(threads, _qemu_threads(name))
            time.sleep(0.5)
        print(f"flood of {FLOOD}: at most {most} host helpers ({rss // 1024} MiB RSS), "
              f"QEMU threads {threads}")
        while driver.state("flood") in (VMState.RUNNING, VMState.STOPPING):
            assert time.monotonic() < deadline + 60, driver.console_log("flood")
            time.sleep(0.5)
        console = driver.console_log("flood")
        assert most <= BOUND, f"{most} host processes for one VM's flood of {FLOOD}"
        assert "XWVM-AGENT: reach yes" in console, console
        assert not _host_helpers(marks), "helpers outlived the VM"
    finally:
        driver.destroy("flood")
        driver.close()
        subprocess.run(["rm", "-rf", str(work)], check=False)
