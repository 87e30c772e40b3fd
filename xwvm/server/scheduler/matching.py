"""Which pending jobs a given host may run: the matching rules as SQL conditions."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, exists, false, or_, select

from xwvm.protocol import NetworkPolicy
from xwvm.protocol.messages import HypervisorProbe
from xwvm.protocol.vocab import NATIVE_ENTRY
from xwvm.server.db.models import App, AppBinary, AppSigner, Host, Template, Work
from xwvm.server.policy import Principal

GROUP_READ, OTHER_READ = 0o040, 0o004
# The host record's hypervisors entry that says whether the host runs native jobs (on the
# host itself); not a hypervisor. A worker that does not say (older versions) runs them.
NATIVE = NATIVE_ENTRY
# What a usable hypervisor enforces when its worker does not say (older versions).
UNSTATED_NETWORKS = (NetworkPolicy.SERVER,)


def probes(host: Host) -> dict[str, HypervisorProbe]:
    """The host's stored probes, read as the protocol's HypervisorProbe (the API stored
    each one from a checked HostFacts); one that does not read (a row written before the
    checks) counts as unusable."""
    found: dict[str, HypervisorProbe] = {}
    for kind, doc in (host.hypervisors or {}).items():
        try:
            found[kind] = HypervisorProbe.from_json(doc, f"hypervisors.{kind}")
        except ValueError:
            found[kind] = HypervisorProbe(usable=False, reason="unreadable probe")
    return found


def runs_native(host: Host) -> bool:
    entry = probes(host).get(NATIVE)
    return entry is None or entry.usable


def confinement(worker: Principal) -> Any:
    """A worker enrolled by a user runs that user's jobs; one tied to a project (usergroup)
    runs that group's jobs that the group may read; a public worker runs public jobs."""
    if worker.confine_user_uid:
        return Work.owner_uid == worker.confine_user_uid
    if worker.confine_group_uid:
        return and_(Work.group_uid == worker.confine_group_uid,
                    Work.access_rights.op("&")(GROUP_READ) != 0)
    return Work.access_rights.op("&")(OTHER_READ) != 0


def signed_for(host: Host) -> list[Any]:
    """A native app's binary runs only where a key that signed it is trusted: the host's
    worker says which keys it trusts (``hypervisors["native"]["app_keys"]``) or that its
    owner runs unsigned apps; a worker that does not say (older versions) is not filtered."""
    entry = probes(host).get(NATIVE)
    if entry is None or entry.app_keys is None or entry.unsigned_apps:
        return []
    keys = list(entry.app_keys)
    return [exists(select(AppSigner.app_uid).where(
        AppSigner.app_uid == Work.app_uid, AppSigner.key_id.in_(keys)))]


def app_available(host: Host) -> Any:
    """A native binary for the host's OS/arch (signed by a key the host trusts), or an app
    the host shares (e.g. ``root``)."""
    native = and_(exists(select(AppBinary.app_uid).where(
        AppBinary.app_uid == Work.app_uid, AppBinary.os == host.os,
        AppBinary.arch == host.arch)), *signed_for(host))
    shared = list(host.shared_apps or [])
    if not shared:
        return native
    return or_(native, exists(select(App.uid).where(
        App.uid == Work.app_uid, App.kind == "shared", App.name.in_(shared))))


def vm_networks(host: Host) -> list[str]:
    """The network policies that a usable hypervisor of the host enforces, as its worker
    reported them; a worker that does not say (older versions) enforced ``server``."""
    found: set[str] = set()
    for kind, probe in probes(host).items():
        if kind != NATIVE and probe.usable:
            nets = UNSTATED_NETWORKS if probe.networks is None else probe.networks
            found.update(str(n) for n in nets)
    return sorted(found)


def vm_limits(host: Host) -> dict[str, int] | None:
    """The ceilings the host's owner set on any one VM (the ``limits`` of its usable
    hypervisor's probe); None from a worker that does not say (older versions)."""
    for kind, probe in probes(host).items():
        if kind != NATIVE and probe.usable and probe.limits is not None:
            lim = probe.limits
            return {"memory_mb": max(lim.memory_mb, 0), "cpus": max(lim.cpus, 0),
                    "disk_mb": max(lim.disk_mb, 0)}
    return None


def within_vm_limits(host: Host) -> list[Any]:
    """A VM job goes only where the job's and its template's minimums fit the ceilings."""
    lim = vm_limits(host)
    if lim is None:
        return []
    template_too_big = exists(select(Template.uid).where(
        Template.uid == Work.template_uid,
        or_(Template.min_memory_mb > lim["memory_mb"], Template.min_cpus > lim["cpus"])))
    return [Work.min_memory_mb <= lim["memory_mb"], Work.min_cpus <= lim["cpus"],
            Work.min_disk_mb <= lim["disk_mb"], ~template_too_big]


def runnable(host: Host) -> Any:
    """Native jobs need their app here; VM jobs need a usable hypervisor here that
    enforces the job's network policy, and minimums within the host's VM ceilings."""
    native = and_(Work.template_uid.is_(None), app_available(host)) if runs_native(host) \
        else false()
    networks = vm_networks(host)
    if not networks:
        return native
    return or_(native, and_(Work.template_uid.is_not(None), Work.network.in_(networks),
                            *within_vm_limits(host)))


def conditions(host: Host, worker: Principal) -> list[Any]:
    return [
        Work.min_memory_mb <= host.memory_mb,
        Work.min_cpus <= host.cpus,
        Work.min_disk_mb <= host.disk_mb,
        or_(Work.expected_host_uid.is_(None), Work.expected_host_uid == host.uid),
        confinement(worker),
        runnable(host),
    ]
