"""The guest network policy, checked from inside real guests (run against every driver).

A LAN test host lives in a network namespace (veth pair, private addresses) and serves
HTTP; "the server" and another host service listen on loopback. With network=server
the guest reaches the server and nothing else.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from tests.support.guest import NET_UP, Guest
from tests.worker.drivers.test_contract import run_to_poweroff
from xwvm.worker.drivers import Driver, Network, VMSpec

# A /24 unlikely to collide with other test sessions on the same machine.
SUBNET = f"10.98.{os.getpid() % 250 + 1}"


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
class Net:
    lan_host: str
    lan_port: int
    server_port: int
    other_port: int


@pytest.fixture
def net() -> Iterator[Net]:
    tag = f"xw{os.getpid() % 100000}"
    ns, host_if, ns_if = f"{tag}lan", f"{tag}h", f"{tag}n"
    lan_host = f"{SUBNET}.1"
    setup = [
        ["ip", "netns", "add", ns],
        ["ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if],
        ["ip", "link", "set", ns_if, "netns", ns],
        ["ip", "addr", "add", f"{SUBNET}.2/24", "dev", host_if],
        ["ip", "link", "set", host_if, "up"],
        ["ip", "netns", "exec", ns, "ip", "addr", "add", f"{lan_host}/24", "dev", ns_if],
        ["ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up"],
        ["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"],
    ]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for cmd in setup:
            subprocess.run(cmd, check=True, capture_output=True)
        n = Net(lan_host, 8080, free_port(), free_port())
        procs.append(http_server(n.lan_port, lan_host, ns))
        procs.append(http_server(n.server_port, "127.0.0.1"))
        procs.append(http_server(n.other_port, "127.0.0.1"))
        wait_listening(lan_host, n.lan_port)  # the LAN host is reachable from the host
        wait_listening("127.0.0.1", n.server_port)
        wait_listening("127.0.0.1", n.other_port)
        yield n
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


# busybox wget segfaults in Debian 12's busybox-static; nc speaks HTTP well enough.
TRY = """\
try() {
  if printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 "$1" "$2" 2>/dev/null | head -1 | grep -q HTTP/1
  then echo "REACH $3 yes"; else echo "REACH $3 no"; fi
}
"""


def test_server_network_reaches_the_server_only(
        driver: Driver, spec_for: Callable[..., VMSpec], make_guest: Callable[[str], Guest],
        net: Net) -> None:
    spec = spec_for("net-1", network=Network.SERVER,
                    server_endpoint=("127.0.0.1", net.server_port))
    endpoint = driver.guest_endpoint(spec)
    assert endpoint is not None
    addr, port = endpoint
    guest = make_guest(NET_UP + TRY + f"""\
echo NICS: $(ls /sys/class/net)
try {addr} {port} server
try {addr} {port} server-again
try {net.lan_host} {net.lan_port} lan
try {SUBNET}.2 {net.server_port} host-lan-address
try 10.0.2.2 {net.server_port} host-gateway-server-port
try 10.0.2.2 {net.other_port} host-other-service
try {addr} {net.other_port} forward-address-other-port
try 10.0.2.3 53 slirp-dns
""")
    boot = {"kernel": guest.kernel, "initrd": guest.initrd, "cmdline": guest.cmdline}
    console = run_to_poweroff(driver, spec_for("net-1", network=Network.SERVER,
                                               server_endpoint=("127.0.0.1", net.server_port),
                                               **boot))
    assert "NICS: eth0 lo" in console
    results = dict(line.split()[1:3] for line in console.splitlines()
                   if line.startswith("REACH "))
    assert results == {
        "server": "yes", "server-again": "yes",  # one socat per connection: many work
        "lan": "no", "host-lan-address": "no", "host-gateway-server-port": "no",
        "host-other-service": "no", "forward-address-other-port": "no", "slirp-dns": "no",
    }, console
    driver.destroy("net-1")
