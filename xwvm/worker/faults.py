"""Whose fault a failure is: the one place the worker decides it.

A job's own failures (its payload's exit code, its wall clock, a template or context the
worker refuses) end the job, as its owner must know. Everything else is the
infrastructure's (:class:`~xwvm.protocol.vocab.Fault`): the worker gives the job back, the
server counts the retry and the host's fault streak (its circuit breaker), and the job
runs again elsewhere. :func:`classify` is the rule; the pull loop and the VM job runner
ask it and never decide on their own.

It also names the steps of a job's life (:func:`step`): each is logged, and a test may
pause the worker at any of them (``XWVM_FAILPOINTS``, as etcd's gofail or FreeBSD's
fail points) to inject a real fault (a killed daemon, a full disk) at exactly that step.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from pathlib import Path

import requests

from xwvm.client.sdk import ApiError, status_of
from xwvm.errors import XwvmError
from xwvm.protocol.vocab import Fault

log = logging.getLogger("xwvm.worker")

#: The steps of a VM job's life, in order (a native job: download, running, upload).
STEPS = ("download", "overlay", "define", "boot", "running", "upload", "destroy")
FAILPOINTS_ENV = "XWVM_FAILPOINTS"
FAILPOINT_MAX_PAUSE_S = 600.0
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


class InfrastructureFault(XwvmError):
    """A failure of the worker's host or of what it depends on, never the job's."""

    fault = Fault.HOST

    def __init__(self, message: str, fault: Fault | None = None, **kw: object) -> None:
        super().__init__(message, code=str(fault or self.fault), **kw)  # type: ignore[arg-type]
        if fault is not None:
            self.fault = fault


class DiskFull(InfrastructureFault):
    """The worker's disk (image cache, overlays, results) has no room left; whatever was
    being written has been removed."""

    fault = Fault.DISK_FULL


def is_disk_full(e: BaseException) -> bool:
    """An OS error (or one that wraps one) saying the filesystem or a quota is full."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, DiskFull) or (isinstance(cur, OSError) and cur.errno in _DISK_FULL):
            return True
        if isinstance(cur, XwvmError) and cur.code == "disk_full":  # a tool said so (qemu-img)
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def classify(e: BaseException) -> Fault | None:
    """The infrastructure fault ``e`` is, or None when it is the job's own failure (the
    job ends in ERROR with the message). Order matters: a full disk is named as such
    whatever layer noticed it."""
    from xwvm.worker.drivers.errors import DriverError, SpecError
    from xwvm.worker.images import ImageError
    if is_disk_full(e):
        return Fault.DISK_FULL
    if isinstance(e, InfrastructureFault):
        return e.fault
    if isinstance(e, SpecError):
        return None  # a VM the driver refuses to make for this job: the job's (or its template's)
    if isinstance(e, DriverError):
        return Fault.HYPERVISOR
    if isinstance(e, ImageError):
        # a template that does not verify is the template's; one that could not be fetched
        # is the network's or the server's
        return Fault.IMAGE if _unreachable(e) else None
    if isinstance(e, (ApiError, requests.RequestException)):
        return Fault.SERVER if _unreachable(e) else None
    if isinstance(e, OSError):
        return Fault.HOST
    return None


def _unreachable(e: BaseException) -> bool:
    """A server that did not answer, answered 5xx, 408 or 429 (here or underneath)."""
    cur: BaseException | None = e
    seen: set[int] = set()
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, requests.RequestException):
            return True
        status = status_of(cur) if isinstance(cur, Exception) else None
        if status is not None and (status == 0 or status >= 500 or status in (408, 429)):
            return True
        cur = cur.__cause__ or cur.__context__
    return isinstance(e, XwvmError) and e.code in ("unreachable", "server_unavailable")


def step(name: str, uid: str, work_dir: Path) -> None:
    """Enter step ``name`` of job ``uid``: logged; and if ``XWVM_FAILPOINTS`` names the
    step, the worker pauses there (the file ``<work_dir>/failpoints/<step>`` exists while
    it waits; removing it resumes), so a test can inject a fault at exactly that point."""
    log.info("job %s: %s", uid, name)
    wanted = os.environ.get(FAILPOINTS_ENV, "")
    if not wanted or name not in {s.strip() for s in wanted.split(",")}:
        return
    marker = work_dir / "failpoints" / name
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(uid)
    log.warning("job %s: paused at fail point %s (remove %s to resume)", uid, name, marker)
    deadline = time.monotonic() + FAILPOINT_MAX_PAUSE_S
    while marker.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    marker.unlink(missing_ok=True)
