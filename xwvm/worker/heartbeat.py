"""A background heartbeat for the jobs a worker runs; it tells the job to stop when the
server no longer counts it as this host's (aborted, timed out, reassigned)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from xwvm.client.sdk import Client
from xwvm.errors import XwvmError
from xwvm.protocol.calls import HeartbeatAnswer

log = logging.getLogger("xwvm.worker")
# A hostile or broken server must not make the worker spin (0) or sleep for ever: the
# periods it sends are clamped to these bounds (seconds).
MIN_PERIOD_S, MAX_PERIOD_S = 1.0, 3600.0


def clamp_period(value: Any, default: float, upper: float = MAX_PERIOD_S) -> float:
    """A server-sent period in [MIN_PERIOD_S, upper]; ``default`` if it is not a number."""
    try:
        period = float(value)
    except (TypeError, ValueError):
        return default
    if period != period:  # NaN
        return default
    return min(max(period, MIN_PERIOD_S), upper)


class Heartbeat:
    def __init__(self, client: Client, host: str, period: float,
                 running: Callable[[], list[str]], on_stop: Callable[[str], None],
                 held: Callable[[], list[str]] | None = None) -> None:
        self.client, self.host, self.period = client, host, clamp_period(period, 60.0)
        self.running, self.on_stop, self.held = running, on_stop, held
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="xwvm-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(timeout=5)

    def beat(self) -> None:
        answer = HeartbeatAnswer.from_json(
            self.client.heartbeat(self.host, self.running(),
                                  self.held() if self.held else None))
        # a server answering 0 (or nonsense) must not make this thread spin
        self.period = clamp_period(answer.alive_period, self.period)
        for uid in answer.stop:
            self.on_stop(uid)

    def _loop(self) -> None:
        wait = self.period
        while not self._done.wait(wait):
            wait = self.period if self._beat_once() else max(MIN_PERIOD_S, self.period / 4)

    def _beat_once(self) -> bool:
        """One beat; False when it failed (the next comes after a quarter period: the
        server's silence clock then stops soon after an outage ends)."""
        try:
            self.beat()
            return True
        except XwvmError as e:  # a missed beat is survivable; the server allows three
            log.warning("heartbeat failed: %s", e.message)
        except ValueError as e:  # an answer that is not one: as a missed beat
            log.warning("heartbeat answer malformed: %s", e)
        except Exception:  # a thread that died would leave the job to the reaper
            log.exception("heartbeat failed")
        return False
