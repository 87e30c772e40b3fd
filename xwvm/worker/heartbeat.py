"""A background heartbeat for the jobs a worker runs; it tells the job to stop when the
server no longer counts it as this host's (aborted, timed out, reassigned)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from xwvm.client.sdk import Client
from xwvm.errors import XwvmError

log = logging.getLogger("xwvm.worker")


class Heartbeat:
    def __init__(self, client: Client, host: str, period: float,
                 running: Callable[[], list[str]], on_stop: Callable[[str], None],
                 held: Callable[[], list[str]] | None = None) -> None:
        self.client, self.host, self.period = client, host, period
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
        answer = self.client.heartbeat(self.host, self.running(),
                                       self.held() if self.held else None)
        self.period = float(answer.get("alive_period", self.period))
        for uid in answer.get("stop", []):
            self.on_stop(uid)

    def _loop(self) -> None:
        while not self._done.wait(self.period):
            try:
                self.beat()
            except XwvmError as e:  # a missed beat is survivable; the server allows three
                log.warning("heartbeat failed: %s", e.message)
