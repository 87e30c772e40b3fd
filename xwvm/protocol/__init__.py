"""Every message that crosses a process boundary (server ↔ worker ↔ guest ↔ client).

This package imports nothing of ours and only the standard library: the guest (appliance/)
carries it into every VM image. Vocabularies and shared constants live in
:mod:`xwvm.protocol.vocab`, endpoint paths in :mod:`xwvm.protocol.paths`, the retry policy
for transient HTTP failures in :mod:`xwvm.protocol.retry`, typed messages in
:mod:`xwvm.protocol.messages`.
"""

from xwvm.protocol.vocab import (
    DEFAULT_PILOT_IDLE_S,
    DEFAULT_WALL_CLOCK_S,
    GUEST_SERVER_NAME,
    WALL_CLOCK_GRACE_S,
    JobStatus,
    NetworkPolicy,
)

__all__ = ["DEFAULT_PILOT_IDLE_S", "DEFAULT_WALL_CLOCK_S", "GUEST_SERVER_NAME",
           "WALL_CLOCK_GRACE_S", "JobStatus", "NetworkPolicy"]
