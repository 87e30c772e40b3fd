"""A server that was down (no process swept) does not count that time as its workers'
silence: restarted after more than three heartbeat periods, it keeps the jobs of workers
that kept them running, and still loses those that were silent before it went down."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.server.conftest import World
from xwvm.server.config import ServerConfig
from xwvm.server.db.models import Event, Maintenance, utcnow
from xwvm.server.scheduler import reaper
from xwvm.server.sweeping import sweep_once


def _world_with_two_running_jobs(world: World) -> tuple[list, list]:
    owner = world.user("owner")
    app = world.app("app", owner)
    hosts = [world.host(world.user(f"worker{i}")) for i in range(2)]
    jobs = []
    for host in hosts:
        [job] = world.jobs(owner, app, 1, status="RUNNING", host_uid=host.uid,
                           started_at=utcnow())
        jobs.append(job)
    return hosts, jobs


def _swept_after_outage(db: Session, cfg: ServerConfig, down_s: float) -> None:
    reaper.claim(db, "reaper", 0)  # the row exists, as on any server that ran before
    db.execute(Maintenance.__table__.update().values(
        last_run=utcnow() - dt.timedelta(seconds=down_s)))
    sweep_once(db, cfg, None)  # type: ignore[arg-type]  # the upload sweep is not due


def test_an_outage_is_not_counted_as_the_workers_silence(world: World,
                                                          tmp_path: Path) -> None:
    db = world.db
    cfg = ServerConfig(data_dir=tmp_path, reap_interval_s=5)
    hosts, jobs = _world_with_two_running_jobs(world)
    now = utcnow()
    # host 0 beat just before the server went down 10 minutes ago; host 1 had been silent
    # for 5 periods (300 s) already when it went down
    hosts[0].last_seen = now - dt.timedelta(seconds=600)
    hosts[1].last_seen = now - dt.timedelta(seconds=600 + 300)
    reaper.claim(db, "uploads", 0)
    _swept_after_outage(db, cfg, 600)
    assert (hosts[0].status, jobs[0].status) == ("alive", "RUNNING")
    assert (hosts[1].status, jobs[1].status) == ("lost", "PENDING")
    assert jobs[1].retries == 1
    [back] = db.scalars(select(Event).where(Event.kind == "server_back")).all()
    assert "not counted" in back.detail


def test_without_an_outage_silence_counts_as_before(world: World, tmp_path: Path) -> None:
    db = world.db
    cfg = ServerConfig(data_dir=tmp_path, reap_interval_s=5)
    hosts, jobs = _world_with_two_running_jobs(world)
    hosts[0].last_seen = utcnow() - dt.timedelta(seconds=250)  # > 4 periods of 60 s
    reaper.claim(db, "uploads", 0)
    _swept_after_outage(db, cfg, 5)  # the previous sweep ran one interval ago
    assert (hosts[0].status, jobs[0].status) == ("lost", "PENDING")
    assert hosts[1].status == "alive"
    assert not db.scalars(select(Event).where(Event.kind == "server_back")).all()


def test_an_outage_is_not_counted_against_a_running_jobs_wall_clock(world: World,
                                                                    tmp_path: Path) -> None:
    """A job whose wall clock ended while no server process ran is not ended by the first
    sweep as its own failure: its worker gives it back once the server answers."""
    db = world.db
    cfg = ServerConfig(data_dir=tmp_path, reap_interval_s=5, wall_clock_grace_s=30)
    hosts, jobs = _world_with_two_running_jobs(world)
    now = utcnow()
    hosts[0].last_seen = now - dt.timedelta(seconds=600)
    jobs[0].wall_clock_s = 500
    jobs[0].started_at = now - dt.timedelta(seconds=700)  # 100 s before the outage
    reaper.claim(db, "uploads", 0)
    _swept_after_outage(db, cfg, 600)
    assert jobs[0].status == "RUNNING"
    hosts[0].last_seen = utcnow()
    jobs[0].started_at = utcnow() - dt.timedelta(seconds=600)  # over, and the server up
    _swept_after_outage(db, cfg, 5)
    assert jobs[0].status == "ERROR" and "wall-clock" in (jobs[0].error_message or "")
