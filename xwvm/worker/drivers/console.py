"""Guest serial consoles as the worker reads them: the tail of the log, its size, and
waiting for a marker (the hypervisor self-test of every backend)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from xwvm.worker.drivers.errors import ConsoleUnreadable

# A console log is read from its end, this much at most (reports quote its tail); a guest
# that writes more than CONSOLE_MAX_BYTES to it is stopped (VirtualBox's raw file has no
# rotation, and the volunteer's disk is not the guest's to fill).
CONSOLE_TAIL_BYTES = 64 * 1024
CONSOLE_MAX_BYTES = 64 * 2**20


def read_console(path: Path, limit: int = CONSOLE_TAIL_BYTES) -> str:
    """The last ``limit`` bytes of a console log ("" before it exists). A log the worker
    may not read (virtlogd writes it root-owned 0600 under qemu:///system for a worker
    that is not root) raises ConsoleUnreadable, which says what to do."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - limit))
            text = f.read(limit).decode(errors="replace")
    except FileNotFoundError:
        return ""
    except PermissionError:
        raise ConsoleUnreadable(
            f"the VM console log {path} is not readable by this worker's account (uid "
            f"{os.getuid()}): under qemu:///system virtlogd writes it as root; run the "
            "worker as root or connect it to qemu:///session") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")  # as text mode reads it


def console_size(path: Path) -> int:
    """Bytes written to a console log so far (0 before it exists): progress, without
    reading it."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def wait_for_marker(console: Path, markers: Iterable[str], active: Callable[[], bool],
                    timeout_s: float) -> str:
    """Wait until the console shows one of ``markers``: "" then, else why not."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            text = read_console(console)
        except ConsoleUnreadable as e:
            return e.message
        if any(m in text for m in markers):
            return ""
        if not active():
            return "the guest stopped before its marker"
        time.sleep(0.05)
    return f"no marker on the console within {timeout_s:.0f} s"
