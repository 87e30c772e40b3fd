"""The guest network policy, checked from inside real guests (libvirt: the fake VirtualBox
guest has no network stack to check from).

A LAN test host lives in a network namespace (veth pair, private addresses) and serves
HTTP; "the server" and another host service listen on loopback. With network=server
the guest reaches the server and nothing else.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from tests.support.guest import NET_UP, Guest
from tests.support.lan import free_port, http_server, lan_host, wait_listening
from tests.worker.drivers.conftest import LIBVIRT_ONLY
from tests.worker.drivers.test_contract import run_to_poweroff
from xwvm.protocol.vocab import NetworkPolicy
from xwvm.worker.drivers import Driver, VMSpec

pytestmark = LIBVIRT_ONLY

# A /24 unlikely to collide with other test sessions on the same machine.
SUBNET = f"10.98.{os.getpid() % 250 + 1}"


@dataclass
class Net:
    lan_host: str
    lan_port: int
    server_port: int
    other_port: int


@pytest.fixture
def net() -> Iterator[Net]:
    procs: list[subprocess.Popen[bytes]] = []
    with lan_host(f"xw{os.getpid() % 100000}", SUBNET) as lan:
        try:
            n = Net(lan.address, lan.port, free_port(), free_port())
            procs.append(http_server(n.server_port, "127.0.0.1"))
            procs.append(http_server(n.other_port, "127.0.0.1"))
            wait_listening("127.0.0.1", n.server_port)
            wait_listening("127.0.0.1", n.other_port)
            yield n
        finally:
            for p in procs:
                p.terminate()
                p.wait(10)


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
    spec = spec_for("net-1", network=NetworkPolicy.SERVER,
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
    console = run_to_poweroff(driver, spec_for("net-1", network=NetworkPolicy.SERVER,
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
