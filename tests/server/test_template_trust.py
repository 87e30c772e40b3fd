"""A VM job goes only to a host whose worker trusts a key that signed its template (issue
23, volunteers): the worker's entry says which template keys it trusts
(:func:`xwvm.worker.facts.vm_entry`), a worker trusting none advertises no usable
hypervisor, and a worker that does not say (older versions) is not filtered. On a real
migrated database; the analysis (`xwvm why`) counts the hosts that trust no signer."""

from __future__ import annotations

import uuid

from tests.server.conftest import World
from xwvm.protocol import NetworkPolicy
from xwvm.protocol.messages import HypervisorProbe
from xwvm.server.db.models import Host, Template, User, Work
from xwvm.server.rights import Level
from xwvm.server.scheduler.analyze import analyze
from xwvm.server.scheduler.assign import assign
from xwvm.worker.facts import NO_TEMPLATE_KEY, vm_entry

PROBE = HypervisorProbe(usable=True, accel="kvm", reason="probe ran",
                        networks=(NetworkPolicy.NONE, NetworkPolicy.SERVER))


def vm_job(world: World, signers: tuple[str, ...], name: str = "base") -> Work:
    owner = world.user(f"owner-{name}")
    tpl = Template(name=name, version="1", owner_uid=owner.uid, access_rights=0o755,
                   status="published", signatures=[
                       {"key_id": k, "public_key": "x", "signature": "y"} for k in signers])
    world.db.add(tpl)
    world.db.flush()
    job = Work(template_uid=tpl.uid, command="true", status="PENDING", network="server",
               owner_uid=owner.uid, access_rights=0o755)
    world.db.add(job)
    world.db.flush()
    return job


def vm_host(world: World, probe: HypervisorProbe | None) -> tuple[Host, User]:
    w = world.user(f"w-{uuid.uuid4().hex[:8]}", Level.WORKER)
    host = world.host(w)
    host.hypervisors = {"native": {"usable": False, "reason": "VM jobs only"}}
    if probe is not None:
        host.hypervisors["libvirt"] = probe.to_json()
    world.db.flush()
    return host, w


def test_a_vm_job_goes_only_where_a_signer_of_its_template_is_trusted(world: World) -> None:
    job = vm_job(world, ("k-signer", "k-other"))
    stranger, w1 = vm_host(world, vm_entry(PROBE, ["k-stranger"]))
    assert assign(world.db, stranger, w1) is None
    trusting, w2 = vm_host(world, vm_entry(PROBE, ["k-stranger", "k-other"]))
    got = assign(world.db, trusting, w2)
    assert got is not None and got.uid == job.uid


def test_a_worker_trusting_no_template_key_advertises_no_vm_jobs(world: World) -> None:
    vm_job(world, ("k-signer",))
    entry = vm_entry(PROBE, [])
    assert not entry.usable and entry.reason == NO_TEMPLATE_KEY and entry.template_keys == ()
    assert HypervisorProbe.from_json(entry.to_json()) == entry  # as the host record keeps it
    host, w = vm_host(world, entry)
    assert assign(world.db, host, w) is None
    # even one that says it is usable, with no key, gets none
    host2, w2 = vm_host(world, HypervisorProbe(usable=True, networks=PROBE.networks,
                                               template_keys=()))
    assert assign(world.db, host2, w2) is None


def test_an_older_worker_that_does_not_say_is_not_filtered(world: World) -> None:
    job = vm_job(world, ("k-signer",))
    host, w = vm_host(world, PROBE)  # no template_keys at all
    got = assign(world.db, host, w)
    assert got is not None and got.uid == job.uid


def test_an_unusable_probe_keeps_its_own_reason(world: World) -> None:
    broken = HypervisorProbe(usable=False, reason="no /dev/kvm")
    assert vm_entry(broken, ["k"]) == broken


def test_why_counts_the_hosts_that_trust_no_signer(world: World) -> None:
    job = vm_job(world, ("k-signer",), name="root6")
    vm_host(world, vm_entry(PROBE, ["k-stranger"]))
    vm_host(world, vm_entry(PROBE, []))  # no usable hypervisor at all
    why = analyze(world.db, job)
    counts = {c.name: c.failing for c in why.conditions}
    assert (why.kind, why.hosts, why.matching) == ("vm", 2, 0)
    assert counts["hypervisor"] == 1 and counts["template_trusted"] == 1
    assert "native" not in counts and "platform" not in counts  # native jobs' conditions
    assert why.summary.startswith("no worker trusts a key that signed template root6:1 "
                                  "(signed by: k-signer;")
    assert why.summary.endswith("(of the 1 of 2 hosts that pass the conditions before)")
