"""Which pending jobs a given host may run: the matching rules as SQL conditions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, exists, false, or_, select, true
from sqlalchemy.orm import object_session

from xwvm.protocol import JobStatus, NetworkPolicy
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
# Network policies no worker enforces yet (no driver implements them), and why: a job
# asking for one is refused at submission instead of waiting for a host that never comes.
UNSUPPORTED_NETWORKS = {
    NetworkPolicy.INTERNET: "no worker enforces it (it needs an egress proxy that keeps "
                            "the guest off the LAN and the host)",
}


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


def app_binary(host: Host) -> Any:
    """The job's app has a binary for the host's OS/arch."""
    return exists(select(AppBinary.app_uid).where(
        AppBinary.app_uid == Work.app_uid, AppBinary.os == host.os,
        AppBinary.arch == host.arch))


def app_shared(host: Host) -> Any:
    """The job's app is a shared app the host provides (e.g. ``root``)."""
    shared = list(host.shared_apps or [])
    if not shared:
        return false()
    return exists(select(App.uid).where(
        App.uid == Work.app_uid, App.kind == "shared", App.name.in_(shared)))


def app_available(host: Host) -> Any:
    """A native binary for the host's OS/arch (signed by a key the host trusts), or an app
    the host shares (e.g. ``root``)."""
    return or_(and_(app_binary(host), *signed_for(host)), app_shared(host))


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


def template_keys(host: Host) -> list[str] | None:
    """The ids of the keys whose template signatures the host's worker trusts (the
    ``template_keys`` of its usable hypervisors' probes); None from a worker that does not
    say (older versions): it is not filtered."""
    found: set[str] = set()
    for kind, probe in probes(host).items():
        if kind != NATIVE and probe.usable:
            if probe.template_keys is None:
                return None
            found.update(probe.template_keys)
    return sorted(found)


def template_trusted(host: Host) -> list[Any]:
    """A VM job goes only where a key that signed its template is trusted: a worker
    refuses to boot any other, so sending it there would only fail the job. The
    signatures are a JSON list on the template row, so the templates that pending jobs
    use are read here, in the host's session, and matched in Python."""
    keys = template_keys(host)
    db = object_session(host)
    if keys is None or db is None:
        return []
    pending = exists(select(Work.seq).where(Work.template_uid == Template.uid,
                                            Work.status == JobStatus.PENDING))
    trusted = [uid for uid, sigs in db.execute(
        select(Template.uid, Template.signatures).where(pending))
        if any(isinstance(s, dict) and s.get("key_id") in keys for s in sigs or ())]
    return [Work.template_uid.in_(trusted)]


@dataclass(frozen=True)
class Check:
    """One matching condition on jobs, as SQL: ``name`` its stable id (the analysis's),
    ``kind`` the jobs it is about (native, vm or all): it holds for the others."""

    name: str
    kind: str
    expr: Any


def _when(kind: str, conds: list[Any]) -> Any:
    """``conds`` for jobs of ``kind`` (native or vm); true for the other kind."""
    other = Work.template_uid.is_not(None) if kind == "native" else Work.template_uid.is_(None)
    return or_(other, and_(true(), *conds))


def _vm_checks(host: Host) -> list[Check]:
    networks = vm_networks(host)
    usable = [true()] if networks else [false()]
    # Without a usable hypervisor the checks below hold: "hypervisor" alone then fails.
    policy = [Work.network.in_(networks)] if networks else []
    limits = within_vm_limits(host) if networks else []
    trusted = template_trusted(host) if networks else []
    return [Check("hypervisor", "vm", _when("vm", usable)),
            Check("network", "vm", _when("vm", policy)),
            Check("template_trusted", "vm", _when("vm", trusted)),
            Check("vm_limits", "vm", _when("vm", limits))]


def checks(host: Host, worker: Principal) -> list[Check]:
    """Every matching condition, one by one: a job matches the host when all hold. Native
    jobs need native jobs allowed here and their app here (a binary for the platform,
    signed by a key the host trusts, or a shared app it provides); VM jobs need a usable
    hypervisor that enforces the job's network policy, a template signed by a key the
    host trusts, and minimums within the host's VM ceilings."""
    shared = app_shared(host)
    return [
        Check("rights", "all", confinement(worker)),
        Check("expected_host", "all", or_(Work.expected_host_uid.is_(None),
                                          Work.expected_host_uid == host.uid)),
        Check("native", "native", _when("native", [true() if runs_native(host) else false()])),
        Check("platform", "native", _when("native", [or_(app_binary(host), shared)])),
        Check("signed", "native", _when("native", [or_(and_(true(), *signed_for(host)),
                                                       shared)])),
        *_vm_checks(host),
        Check("memory", "all", Work.min_memory_mb <= host.memory_mb),
        Check("cpus", "all", Work.min_cpus <= host.cpus),
        Check("disk", "all", Work.min_disk_mb <= host.disk_mb),
    ]


def conditions(host: Host, worker: Principal) -> list[Any]:
    return [c.expr for c in checks(host, worker)]
