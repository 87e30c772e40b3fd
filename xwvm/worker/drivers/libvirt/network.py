"""The guest network policy for libvirt/QEMU: no NIC, or the server and nothing else.

``server`` uses QEMU user networking (SLIRP) with ``restrict=on`` — the guest can open
no connection out of the VM at all — plus one ``guestfwd``: a guest connection to
10.0.2.100:PORT makes QEMU start ``socat - UNIX-CONNECT:<the VM's forwarder socket>``,
and the worker's forwarder for that VM (xwvm.worker.forwarder) relays it to the real
server, a bounded number at a time: the helper never reaches the server itself. Nothing
else is routed: not the LAN (RFC 1918, link-local, CGNAT, ULA), not the host's other
services, not DNS. libvirt's ``<interface type='user'>`` cannot express
restrict/guestfwd, so the netdev goes through ``<qemu:commandline>``; the NIC sits on a
fixed PCI slot that libvirt's own allocation does not reach.

Why not libvirt nwfilter: it needs a bridge, a NAT network and iptables/ebtables on the
volunteer's host, and its correctness depends on rules we would have to audit; SLIRP in
restrict mode is deny-all by construction, runs unprivileged inside QEMU, and the tests
check it from inside a guest.

``internet`` needs an egress proxy that refuses LAN ranges (a guestfwd to a host CONNECT
proxy); until that exists it is refused, never silently widened.
"""

from __future__ import annotations

import re
from pathlib import Path

from xwvm.protocol.vocab import NetworkPolicy
from xwvm.worker.drivers.errors import Unsupported
from xwvm.worker.drivers.spec import VMSpec, refuse_unenforced

GUEST_SERVER_ADDR = "10.0.2.100"  # where the guest finds the server (inside SLIRP's 10.0.2.0/24)
NIC_PCI_SLOT = "0x1f"             # the last slot of pc's bus 0; libvirt allocates from 0x2 up
NO_SOCAT = "network=server needs socat on the host (scripts/install-vm-host.sh)"


def guest_address(server: tuple[str, int]) -> tuple[str, int]:
    """Where the guest reaches the server: GUEST_SERVER_ADDR on the server's own port."""
    return GUEST_SERVER_ADDR, server[1]


# The forwarder socket's path goes into QEMU's option syntax (commas separate values), a
# shell-like argv (spaces) and socat's address syntax (colons, commas, "!!"): plain only.
SOCKET_PATH_RE = re.compile(r"^/[A-Za-z0-9/._-]+$")


def qemu_args(spec: VMSpec, socat: str | None, forward_socket: Path | None) -> list[str]:
    """The QEMU arguments that give ``spec`` its network, or [] for no NIC."""
    refuse_unenforced(spec, enforced(socat), NO_SOCAT)
    if spec.network == NetworkPolicy.NONE:
        return []  # libvirt runs QEMU with -nodefaults: no NIC unless we add one
    assert socat is not None and spec.server_endpoint is not None  # enforced, validate
    port = spec.server_endpoint[1]
    if forward_socket is None or not SOCKET_PATH_RE.match(str(forward_socket)):
        raise Unsupported("network=server needs a work dir whose path has only letters, "
                          "digits and / . _ - (QEMU and socat parse it)")
    fwd = (f"guestfwd=tcp:{GUEST_SERVER_ADDR}:{port}-cmd:{socat} - "
           f"UNIX-CONNECT:{forward_socket}")
    netdev = f"user,id=xwnet0,restrict=on,ipv6=off,{fwd}"
    device = f"virtio-net-pci,netdev=xwnet0,bus=pci.0,addr={NIC_PCI_SLOT}"
    if "," in socat:
        raise Unsupported(f"socat path {socat!r} contains a comma")
    return ["-netdev", netdev, "-device", device]


def enforced(socat: str | None) -> tuple[NetworkPolicy, ...]:
    """What this host enforces: no NIC always; the server only when socat is there."""
    return (NetworkPolicy.NONE, NetworkPolicy.SERVER) if socat else (NetworkPolicy.NONE,)


def needs_spawn(spec: VMSpec) -> bool:
    """Whether QEMU must be allowed to start processes (guestfwd's socat) for this spec."""
    return spec.network != NetworkPolicy.NONE
