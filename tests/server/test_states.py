"""The job state graph: legal moves, refused moves (409, logged), retries."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.server.conftest import World
from xwvm.errors import Conflict
from xwvm.server import states
from xwvm.server.db.models import Event


def test_graph_has_every_state_and_terminal_states_are_final() -> None:
    assert set(states.GRAPH) == set(states.ALL)
    for s in states.TERMINAL:
        assert states.GRAPH[s] == frozenset()


def test_legal_path_is_logged(world: World) -> None:
    alice = world.user("alice")
    job = world.jobs(alice, world.app("a", alice), 1)[0]
    for dst in (states.RUNNING, states.RESULTREQUEST, states.COMPLETED):
        states.move(world.db, job, dst, actor_uid=alice.uid, reason="step")
    world.db.flush()
    moves = [(e.from_status, e.to_status) for e in world.db.scalars(
        select(Event).where(Event.object_uid == job.uid).order_by(Event.id))]
    assert moves == [("PENDING", "RUNNING"), ("RUNNING", "RESULTREQUEST"),
                     ("RESULTREQUEST", "COMPLETED")]
    assert job.completed_at is not None and job.started_at is not None


@pytest.mark.parametrize("src,dst", [
    ("PENDING", "COMPLETED"), ("COMPLETED", "RUNNING"), ("ERROR", "PENDING"),
    ("ABORTED", "PENDING"), ("WAITING", "RUNNING"), ("DATAREQUEST", "RUNNING"),
    ("LOST", "RUNNING"), ("RESULTREQUEST", "RUNNING"),
])
def test_illegal_move_is_409_and_changes_nothing(world: World, src: str, dst: str) -> None:
    alice = world.user("alice")
    job = world.jobs(alice, world.app("a", alice), 1, status=src)[0]
    with pytest.raises(Conflict) as e:
        states.move(world.db, job, dst, actor_uid=alice.uid)
    assert e.value.status == 409 and src in e.value.message and dst in e.value.message
    assert job.status == src
    assert e.value.details["allowed"] == sorted(states.GRAPH[src])
    # (the API logs the refusal in its own transaction: tests/server/test_api_errors.py)


def test_lost_job_is_retried_then_errors_when_retries_are_spent(world: World) -> None:
    alice = world.user("alice")
    job = world.jobs(alice, world.app("a", alice), 1, max_retries=2)[0]
    for attempt in (1, 2):
        states.move(world.db, job, states.RUNNING, actor_uid=None)
        states.lose(world.db, job, reason="worker vanished")
        assert (job.status, job.retries) == (states.PENDING, attempt)
    states.move(world.db, job, states.RUNNING, actor_uid=None)
    states.lose(world.db, job, reason="worker vanished")
    assert job.status == states.ERROR and job.retries == 3
    assert "gave up after 2 retries" in (job.error_message or "")


@pytest.mark.parametrize("back", ["give back", "lose"])
def test_a_job_back_in_the_queue_has_no_holder(world: World, back: str) -> None:
    """Issue 12, hole 8: the host and the pilot that held a job are cleared in the move
    back to PENDING, so their credentials cannot act on it once it runs elsewhere."""
    alice = world.user("alice")
    pilot, job = world.jobs(alice, world.app("a", alice), 2)
    states.move(world.db, pilot, states.RUNNING, actor_uid=None, host_uid="h1")
    states.move(world.db, job, states.RUNNING, actor_uid=None, host_uid="h1",
                pilot_uid=pilot.uid)
    assert (job.host_uid, job.pilot_uid) == ("h1", pilot.uid)
    if back == "lose":
        states.lose(world.db, job, reason="worker vanished")
    else:
        states.move(world.db, job, states.PENDING, actor_uid=None, reason="given back")
    assert (job.status, job.host_uid, job.pilot_uid) == (states.PENDING, None, None)
    states.move(world.db, job, states.RUNNING, actor_uid=None, host_uid="h2")
    assert (job.host_uid, job.pilot_uid) == ("h2", None)


def test_a_job_given_back_from_resultrequest_counts_its_retry(world: World) -> None:
    """A worker whose results the server never took before the job's wall clock ended
    gives the job back from RESULTREQUEST: PENDING with the retry counted."""
    alice = world.user("alice")
    job = world.jobs(alice, world.app("a", alice), 1, status="RESULTREQUEST",
                     max_retries=1)[0]
    states.give_back(world.db, job, reason="given back by its worker (server)",
                     actor_uid=None)
    assert (job.status, job.retries) == ("PENDING", 1)
    job.status = "RESULTREQUEST"
    states.give_back(world.db, job, reason="again", actor_uid=None)
    assert (job.status, job.retries) == ("ERROR", 2)
    assert job.error_message == "again; gave up after 1 retries"
