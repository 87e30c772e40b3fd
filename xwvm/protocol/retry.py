"""The one retry policy for transient HTTP failures (no answer, a broken stream, a
502/503/504 from a proxy or a restarting server): capped exponential backoff."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

#: HTTP statuses that say "try again later" (0: no answer at all).
TRANSIENT_STATUS = frozenset({0, 502, 503, 504})


def is_transient(status: int) -> bool:
    return status in TRANSIENT_STATUS


@dataclass(frozen=True)
class Backoff:
    """Delays between attempts: ``first``, doubling, at most ``cap``; ``attempts`` tries in
    all (None: until the caller gives up)."""

    first: float = 1.0
    cap: float = 30.0
    attempts: int | None = 5

    def delays(self) -> Iterator[float]:
        delay, n = self.first, 1
        while self.attempts is None or n < self.attempts:
            yield delay
            delay, n = min(delay * 2, self.cap), n + 1


def retrying(fn: Callable[[], T], status_of: Callable[[Exception], int | None],
                backoff: Backoff = Backoff(),
                sleep: Callable[[float], bool | None] | None = None,
                on_retry: Callable[[Exception, float], None] | None = None) -> T | None:
    """Call ``fn``; on an exception whose ``status_of`` is transient, wait and call again.
    ``status_of`` returns None for exceptions that are not HTTP failures (re-raised).
    ``sleep(delay)`` returning True means "stop asking": retrying returns None."""
    for delay in backoff.delays():
        try:
            return fn()
        except Exception as e:
            status = status_of(e)
            if status is None or not is_transient(status):
                raise
            if on_retry is not None:
                on_retry(e, delay)
        if (sleep or time.sleep)(delay):
            return None
    return fn()
