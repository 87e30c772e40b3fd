"""Matching, owner fairness, confinement and atomic assignment, on real databases."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from tests.server.conftest import World
from tests.support.postgres import PostgresServer
from xwvm.server.db.engine import make_engine, make_sessionmaker, migrate
from xwvm.server.db.models import Event, Host, User, UserGroup, Work
from xwvm.server.rights import GROUP, PRIVATE, Level
from xwvm.server.scheduler.assign import assign


def test_native_binary_must_match_os_and_arch(world: World) -> None:
    alice, w = world.user("alice"), world.user("w", Level.WORKER)
    arm_app = world.app("armonly", alice, platforms=("linux/aarch64",))
    world.jobs(alice, arm_app, 1)
    assert assign(world.db, world.host(w), w) is None
    arm_host = world.host(w, arch="aarch64")
    assert assign(world.db, arm_host, w) is not None


def test_shared_app_goes_to_hosts_that_share_it(world: World) -> None:
    alice, w = world.user("alice"), world.user("w", Level.WORKER)
    root = world.app("root", alice, platforms=(), kind="shared")
    job = world.jobs(alice, root, 1)[0]
    assert assign(world.db, world.host(w), w) is None
    got = assign(world.db, world.host(w, shared=("root",)), w)
    assert got is not None and got.uid == job.uid


def test_resources_and_expected_host(world: World) -> None:
    alice, w = world.user("alice"), world.user("w", Level.WORKER)
    app = world.app("a", alice)
    small, big = world.host(w, memory_mb=512, cpus=1), world.host(w, memory_mb=8192, cpus=8)
    job = world.jobs(alice, app, 1, min_memory_mb=2048, min_cpus=4)[0]
    assert assign(world.db, small, w) is None
    assert assign(world.db, big, w).uid == job.uid
    pinned = world.jobs(alice, app, 1, expected_host_uid=small.uid)[0]
    assert assign(world.db, big, w) is None
    assert assign(world.db, small, w).uid == pinned.uid


def test_confinement_user_group_public(world: World) -> None:
    grp = UserGroup(name="cms", owner_uid="x", access_rights=GROUP)
    world.db.add(grp)
    world.db.flush()
    alice, bob = world.user("alice", group=grp.uid), world.user("bob")
    app = world.app("a", alice)
    private_alice = world.jobs(alice, app, 1, access_rights=PRIVATE)[0]
    group_alice = world.jobs(alice, app, 1, access_rights=GROUP)[0]
    private_bob = world.jobs(bob, app, 1, access_rights=PRIVATE)[0]
    public_w = world.user("pub", Level.WORKER)
    cms_w = world.user("cmsw", Level.WORKER, confine_group_uid=grp.uid)
    bob_w = world.user("bobw", Level.WORKER, confine_user_uid=bob.uid)
    assert assign(world.db, world.host(public_w), public_w) is None  # nothing is public
    assert assign(world.db, world.host(cms_w), cms_w).uid == group_alice.uid
    assert assign(world.db, world.host(cms_w), cms_w) is None  # 700 is not for the group
    assert assign(world.db, world.host(bob_w), bob_w).uid == private_bob.uid
    assert assign(world.db, world.host(bob_w), bob_w) is None
    assert private_alice.status == "PENDING"


def test_fair_share_does_not_starve_the_small_owner(world: World) -> None:
    big, small, w = world.user("big"), world.user("small"), world.user("w", Level.WORKER)
    app = world.app("a", big)
    world.jobs(big, app, 1000)
    small_jobs = {j.uid for j in world.jobs(small, app, 10)}
    host = world.host(w)
    first_20 = [assign(world.db, host, w) for _ in range(20)]
    assert {j.uid for j in first_20 if j.owner_uid == small.uid} == small_jobs


def test_each_owner_gets_oldest_job_first(world: World) -> None:
    alice, w = world.user("alice"), world.user("w", Level.WORKER)
    jobs = world.jobs(alice, world.app("a", alice), 5)
    host = world.host(w)
    assert [assign(world.db, host, w).uid for _ in jobs] == [j.uid for j in jobs]


def _hammer(sessions: sessionmaker[Session], hosts: list[str], worker_uid: str,
            per_thread: int) -> Counter[str]:
    """Threads assigning concurrently, each in its own transactions."""
    got: Counter[str] = Counter()
    lock = threading.Lock()
    errors: list[BaseException] = []

    def run(host_uid: str) -> None:
        try:
            for _ in range(per_thread):
                with sessions() as db:
                    host, worker = db.get(Host, host_uid), db.get(User, worker_uid)
                    work = assign(db, host, worker)
                    db.commit()
                    if work is not None:
                        with lock:
                            got[work.uid] += 1
        except BaseException as e:  # re-raised in the test thread below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(h,)) for h in hosts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return got


def _concurrent_assignment(sessions: sessionmaker[Session]) -> None:
    with sessions() as db:
        world = World(db)
        owners = [world.user(f"u{i}") for i in range(3)]
        app = world.app("a", owners[0])
        for o in owners:
            world.jobs(o, app, 40)
        w = world.user("w", Level.WORKER)
        hosts = [world.host(w).uid for _ in range(8)]
        db.commit()
        worker_uid = w.uid
    got = _hammer(sessions, hosts, worker_uid, per_thread=20)
    assert len(got) == 120, "every job assigned"
    assert max(got.values()) == 1, "no job assigned twice"
    with sessions() as db:
        assert db.scalar(select(func.count()).select_from(Work)
                         .where(Work.status == "RUNNING")) == 120
        runs = db.scalar(select(func.count()).select_from(Event)
                         .where(Event.to_status == "RUNNING"))
        assert runs == 120


def test_concurrent_assignment_sqlite(sessions: sessionmaker[Session]) -> None:
    _concurrent_assignment(sessions)


@pytest.mark.postgres
def test_concurrent_assignment_postgres(postgres: PostgresServer) -> None:
    engine = make_engine(postgres.create_database("sched_concurrent"))
    migrate(engine)
    try:
        _concurrent_assignment(make_sessionmaker(engine))
    finally:
        engine.dispose()


def test_vm_jobs_need_a_vm_capable_host_and_held_images_come_first(world: World) -> None:
    alice, w = world.user("alice"), world.user("w", Level.WORKER)
    cold = [Work(template_uid=f"00000000-0000-0000-0000-00000000000{i}", command="true",
                 status="PENDING", owner_uid=alice.uid, access_rights=0o755) for i in (1, 2)]
    world.db.add_all(cold)
    world.db.flush()
    native_host = world.host(w)
    assert assign(world.db, native_host, w) is None, "no hypervisor, no VM job"
    vm_host = world.host(w)
    vm_host.hypervisors = {"libvirt": {"usable": True}}  # a worker before "networks": server
    vm_host.templates_held = [cold[1].template_uid]
    assert assign(world.db, vm_host, w).uid == cold[1].uid, "the cached image first"
    assert assign(world.db, vm_host, w).uid == cold[0].uid


def test_vm_jobs_go_only_to_hosts_that_enforce_their_network(world: World) -> None:
    """A VirtualBox host enforces network=none only (its NAT reaches the LAN): it never
    gets a server-network VM job, however long that job waits, and does get none jobs."""
    alice, w = world.user("alice"), world.user("w", Level.WORKER)
    tpl = "00000000-0000-0000-0000-000000000009"
    server_job, none_job = (Work(template_uid=tpl, command="true", status="PENDING",
                                 owner_uid=alice.uid, access_rights=0o755, network=net)
                            for net in ("server", "none"))
    world.db.add_all([server_job, none_job])
    world.db.flush()
    vbox = world.host(w)
    vbox.hypervisors = {"libvirt": {"usable": False, "reason": "no libvirt"},
                        "virtualbox": {"usable": True, "networks": ["none"]}}
    assert assign(world.db, vbox, w).uid == none_job.uid
    assert assign(world.db, vbox, w) is None, "the server-network job is not for VirtualBox"
    unusable = world.host(w)
    unusable.hypervisors = {"libvirt": {"usable": False, "networks": ["none", "server"]}}
    assert assign(world.db, unusable, w) is None, "an unusable hypervisor enforces nothing"
    odd = world.host(w)
    odd.hypervisors = {"libvirt": {"usable": True, "networks": "server"}}  # not a list
    assert assign(world.db, odd, w) is None
    kvm = world.host(w)
    kvm.hypervisors = {"libvirt": {"usable": True, "networks": ["none", "server"]}}
    assert assign(world.db, kvm, w).uid == server_job.uid
