"""The one rule of whose fault a failure is (xwvm.worker.faults.classify), over the real
errors each layer raises, and the fail points that let a test pause a job at a step."""

from __future__ import annotations

import errno
import threading
import time
from pathlib import Path

import pytest
import requests

from xwvm.client.sdk import ApiError
from xwvm.errors import XwvmError
from xwvm.protocol.vocab import Fault
from xwvm.worker import faults
from xwvm.worker.drivers.errors import (
    ConsoleUnreadable,
    DriverError,
    HypervisorUnavailable,
    SpecError,
    Unsupported,
    VMExists,
)
from xwvm.worker.images import ImageError
from xwvm.worker.vmjob import ContextRefused, TooBig


def _wrapped(outer: Exception, cause: BaseException) -> Exception:
    try:
        try:
            raise cause
        except BaseException as inner:
            raise outer from inner
    except Exception as e:
        return e


@pytest.mark.parametrize(("error", "fault"), [
    (OSError(errno.ENOSPC, "No space left on device"), Fault.DISK_FULL),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), Fault.DISK_FULL),
    (faults.DiskFull("the image cache is full"), Fault.DISK_FULL),
    (_wrapped(ImageError("cannot write the chunk"), OSError(errno.ENOSPC, "full")),
     Fault.DISK_FULL),
    (_wrapped(XwvmError("exchange disk"), OSError(errno.ENOSPC, "full")), Fault.DISK_FULL),
    (DriverError("qemu-img create failed: No space left on device", code="disk_full"),
     Fault.DISK_FULL),
    (HypervisorUnavailable("look up domain: Cannot write data: Broken pipe"),
     Fault.HYPERVISOR),
    (DriverError("create domain: internal error"), Fault.HYPERVISOR),
    (VMExists("job x already has a VM"), Fault.HYPERVISOR),
    (ConsoleUnreadable("console"), Fault.HYPERVISOR),
    (_wrapped(ImageError("cannot fetch the template: timed out"),
              ApiError("timed out", code="timeout", status=0)), Fault.IMAGE),
    (_wrapped(ImageError("cannot fetch the template"), ApiError("busy", status=503)),
     Fault.IMAGE),
    (ApiError("server unreachable", code="unreachable", status=0), Fault.SERVER),
    (ApiError("internal error", status=500), Fault.SERVER),
    (ApiError("slow down", status=429), Fault.SERVER),
    (requests.ConnectionError("connection refused"), Fault.SERVER),
    (OSError(errno.EIO, "Input/output error"), Fault.HOST),
    (faults.InfrastructureFault("anything else of the host"), Fault.HOST),
    (faults.InfrastructureFault("the VM died", Fault.VM_CRASHED), Fault.VM_CRASHED),
])
def test_infrastructure_failures_are_faults(error: Exception, fault: Fault) -> None:
    assert faults.classify(error) == fault


@pytest.mark.parametrize("error", [
    SpecError("the cap is smaller than the template"),
    Unsupported("the libvirt driver boots qcow2 or raw templates, not vdi"),
    ImageError("template base:1 is unsigned: this worker boots only signed templates"),
    ImageError("the disk artifact does not match its sha256"),
    ApiError("no such data", status=404),
    ApiError("not yours", status=403),
    ContextRefused("the job's context was refused: bad user-data"),
    XwvmError("two of the job's files have the same name", code="bad_job_files"),
    TooBig("the job needs more than this worker's VM ceilings"),
    ValueError("a payload's problem"),
])
def test_the_jobs_own_failures_are_not(error: Exception) -> None:
    assert faults.classify(error) is None


def test_a_fail_point_pauses_the_step_until_its_file_goes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(faults.FAILPOINTS_ENV, "define, boot")
    marker = tmp_path / "failpoints" / "boot"
    done = threading.Event()
    thread = threading.Thread(target=lambda: (faults.step("boot", "job-1", tmp_path),
                                              done.set()))
    thread.start()
    deadline = time.monotonic() + 10
    while not marker.exists():
        assert time.monotonic() < deadline, "the fail point made no marker"
        time.sleep(0.02)
    assert marker.read_text() == "job-1"
    time.sleep(0.3)
    assert not done.is_set(), "the step went on while paused"
    marker.unlink()
    thread.join(10)
    assert done.is_set()


def test_steps_not_named_do_not_pause(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(faults.FAILPOINTS_ENV, "boot")
    started = time.monotonic()
    faults.step("download", "job-1", tmp_path)
    monkeypatch.delenv(faults.FAILPOINTS_ENV)
    faults.step("boot", "job-1", tmp_path)
    assert time.monotonic() - started < 1 and not (tmp_path / "failpoints").exists()
