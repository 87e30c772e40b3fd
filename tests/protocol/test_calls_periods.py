"""A hostile server's periods: an integer too large for a float (10**400, valid JSON)
reads as absent, as any other period that is not a finite number does, instead of an
OverflowError out of the answer's reader (which killed the pull loop or the heartbeat)."""

from __future__ import annotations

import json

import pytest

from xwvm.protocol.calls import HeartbeatAnswer, WorkAnswer

HUGE = "9" * 400  # an int JSON reads; float() of it overflows


@pytest.mark.parametrize("raw", [HUGE, "-" + HUGE, "1e400", "true", '"60"'])
def test_a_period_that_is_no_finite_number_reads_as_absent(raw: str) -> None:
    work = WorkAnswer.from_json(json.loads(f'{{"retry_after": {raw}, "alive_period": {raw}}}'))
    assert (work.retry_after, work.alive_period, work.work) == (None, None, None)
    beat = HeartbeatAnswer.from_json(json.loads(f'{{"alive_period": {raw}, "stop": []}}'))
    assert beat.alive_period is None and beat.stop == ()


def test_ordinary_periods_are_kept() -> None:
    assert WorkAnswer.from_json({"retry_after": 5, "alive_period": 0.5}) == \
        WorkAnswer(None, 0.5, 5)
    assert HeartbeatAnswer.from_json({"alive_period": 10 ** 6}).alive_period == 10 ** 6
