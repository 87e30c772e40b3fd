"""The guest network policy for VirtualBox: no NIC at all; NAT only where the operator
accepts that VirtualBox cannot keep the guest off the LAN.

VirtualBox's NAT (like QEMU's SLIRP without ``restrict=on``) forwards the guest's
connections to any address the host can reach: the LAN (RFC 1918, link-local, CGNAT,
ULA) included. The API offers no per-VM destination filter: INATEngine has port forwards
(host to guest), ``localhostReachable`` (7.0+: the host's loopback, off by default) and
DNS switches; a NAT network's rules are port forwards too; host-only and bridged
attachments are worse. So ``network=server`` cannot be enforced by VirtualBox alone, and
the driver refuses it unless it was built with ``lan_nat=True``, an explicit choice for
a host whose LAN has nothing to protect. Enforcing ``server`` for real needs a channel
that reaches only the server: a host pipe (a virtual serial port in HostPipe mode) or an
egress proxy run by the worker; until then, VirtualBox workers run ``network=none`` jobs.

With NAT: one adapter, no port forwards except the job's own proxied ports, each bound
to 127.0.0.1 on the host (``port_forwards``; VMSpec has no proxied ports yet, so none),
the host's loopback unreachable, no DNS domain passed to the guest. Bridged, host-only,
internal and generic attachments are never used; the other seven adapters are off.
"""

from __future__ import annotations

import ipaddress

from xwvm.protocol.vocab import NetworkPolicy
from xwvm.worker.drivers.errors import Unsupported
from xwvm.worker.drivers.spec import VMSpec, refuse_unenforced
from xwvm.worker.drivers.virtualbox.config import NIC, NIC_SLOTS, NATRule

PROXY_BIND = "127.0.0.1"
NAT_REACHES_LAN = ("network=server is not supported yet by the VirtualBox driver: VirtualBox "
                   "NAT lets the guest reach the LAN, and its API has no per-VM filter to "
                   "stop it (see docs/vm-execution.md)")


def port_forwards(ports: list[tuple[int, int]]) -> list[NATRule]:
    """NAT forwards for a job's proxied ports, (host port, guest port), on loopback only."""
    return [NATRule(f"xwvm-{guest}", PROXY_BIND, host, guest) for host, guest in ports]


def enforced(lan_nat: bool) -> tuple[NetworkPolicy, ...]:
    """``none`` always; ``server`` only on a host whose admin chose lan_nat."""
    return (NetworkPolicy.NONE, NetworkPolicy.SERVER) if lan_nat else (NetworkPolicy.NONE,)


def nics(spec: VMSpec, lan_nat: bool, proxied: list[tuple[int, int]] | None = None
         ) -> list[NIC]:
    """Every adapter slot's setting for ``spec``; raises Unsupported for what cannot be
    enforced."""
    refuse_unenforced(spec, enforced(lan_nat), NAT_REACHES_LAN)
    off = [NIC(slot) for slot in range(NIC_SLOTS)]
    if spec.network == NetworkPolicy.NONE:
        return off
    assert spec.server_endpoint is not None  # VMSpec.validate
    if _is_loopback(spec.server_endpoint[0]):
        raise Unsupported("a server on the host's loopback would need NAT's "
                          "localhostReachable, which opens every host service to the guest")
    off[0] = NIC(0, "NAT", localhost_reachable=False, dns_pass_domain=False,
                 rules=port_forwards(proxied or []))
    return off


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
