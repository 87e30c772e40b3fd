"""A LAN test host in a network namespace (veth pair, private /24) serving HTTP, to check
from inside guests that the LAN is unreachable. Created and removed by the tests."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_server(port: int, bind: str, netns: str | None = None) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "http.server", str(port), "--bind", bind]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd="/var/empty" if os.path.isdir("/var/empty") else "/")


def reachable(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_listening(host: str, port: int) -> None:
    deadline = time.monotonic() + 10
    while not reachable(host, port):
        assert time.monotonic() < deadline, f"{host}:{port} never listened"
        time.sleep(0.1)


@dataclass
class LanHost:
    netns: str
    address: str   # the LAN host, in the namespace
    port: int      # its HTTP port
    host_side: str  # this machine's address on the veth pair


@contextlib.contextmanager
def lan_host(tag: str, subnet: str, port: int = 8080) -> Iterator[LanHost]:
    """``tag``: a short unique name (interface names have 15 characters at most);
    ``subnet``: the first three octets of a private /24, e.g. ``10.98.7``."""
    ns, host_if, ns_if = f"{tag}lan", f"{tag}h", f"{tag}n"
    lan = LanHost(ns, f"{subnet}.1", port, f"{subnet}.2")
    setup = [
        ["ip", "netns", "add", ns],
        ["ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if],
        ["ip", "link", "set", ns_if, "netns", ns],
        ["ip", "addr", "add", f"{lan.host_side}/24", "dev", host_if],
        ["ip", "link", "set", host_if, "up"],
        ["ip", "netns", "exec", ns, "ip", "addr", "add", f"{lan.address}/24", "dev", ns_if],
        ["ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up"],
        ["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"],
    ]
    server = None
    try:
        for cmd in setup:
            subprocess.run(cmd, check=True, capture_output=True)
        server = http_server(port, lan.address, ns)
        wait_listening(lan.address, port)  # the LAN host is reachable from this machine
        yield lan
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
