"""Riding out a restart of the hypervisor's service (libvirtd, VBoxSVC), written once for
every backend: the bounded reconnect window, the capped backoff and the log lines.

A call whose connection breaks (the service restarts under it) does not fail at once: the
backend drops the connection, reopens it, waiting while the service is absent, and runs the
call again, for at most ``reconnect_s`` seconds from the first failure (60 s; the
environment variable ``XWVM_HYPERVISOR_RECONNECT_S`` overrides the default). Only then
does it raise :class:`~xwvm.worker.drivers.errors.HypervisorUnavailable`, saying how long
it tried. Each backend decides which of its errors mean "the connection is gone" and makes
its non-idempotent calls safe to repeat (it checks whether the lost attempt succeeded).
"""

from __future__ import annotations

import logging
import os
import time

from xwvm.worker.drivers.errors import DriverError, HypervisorUnavailable

RECONNECT_S = 60.0
RECONNECT_ENV = "XWVM_HYPERVISOR_RECONNECT_S"
# Waits between attempts while the service is absent: 0.1 s, doubling, at most 2 s (so a
# call resumes within 2 s of the service's return).
FIRST_WAIT_S = 0.1
MAX_WAIT_S = 2.0

log = logging.getLogger("xwvm.worker.vm")


def reconnect_window(value: float | None = None) -> float:
    """``value`` if given, else ``$XWVM_HYPERVISOR_RECONNECT_S``, else 60 s."""
    if value is None:
        raw = os.environ.get(RECONNECT_ENV, "").strip()
        if not raw:
            return RECONNECT_S
        try:
            value = float(raw)
        except ValueError:
            raise DriverError(f"{RECONNECT_ENV} must be a number of seconds, "
                              f"not {raw!r}") from None
    if not value >= 0:  # also refuses NaN
        raise DriverError(f"the hypervisor reconnect window must be >= 0 s, not {value}")
    return float(value)


class Outage:
    """One lost connection to a hypervisor service, from the call that found it broken
    until the service answers again or the window is over."""

    def __init__(self, service: str, action: str, reason: str, window_s: float) -> None:
        self.service, self.action, self.window_s = service, action, window_s
        self.started = time.monotonic()
        self.deadline = self.started + window_s
        self.wait_s = FIRST_WAIT_S
        self.reason = reason
        self.reconnected = False
        log.warning("lost the connection to %s during %r: %s; reconnecting for up to %g s",
                    service, action, reason, window_s)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def pause(self, reason: str) -> None:
        """Wait before the next attempt (``reason``: why the last one failed); raise
        HypervisorUnavailable once the window is over."""
        self.reason, self.reconnected = reason, False
        left = self.deadline - time.monotonic()
        if left <= 0:
            log.error("gave up reconnecting to %s after %.1f s during %r: %s",
                      self.service, self.elapsed(), self.action, reason)
            raise HypervisorUnavailable(
                f"{self.action}: {self.service} unreachable; gave up reconnecting after "
                f"{self.elapsed():.1f} s (reconnect window {self.window_s:g} s, "
                f"{RECONNECT_ENV}): {reason}",
                details={"reconnect_s": self.window_s})
        time.sleep(min(self.wait_s, left))
        self.wait_s = min(self.wait_s * 2, MAX_WAIT_S)

    def recovered(self) -> None:
        """The service answers again (logged once per reconnect)."""
        if self.reconnected:
            return
        self.reconnected = True
        log.info("reconnected to %s after %.1f s; retrying %r", self.service,
                 self.elapsed(), self.action)
