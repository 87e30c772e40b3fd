"""Console logs as a hostile guest fills them: read from the end only, stopped past a cap,
and a log the worker may not read is a clear host error, not an empty console."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from xwvm.worker.drivers.console import (
    CONSOLE_TAIL_BYTES,
    console_size,
    read_console,
    wait_for_marker,
)


def test_a_huge_console_is_read_from_its_end_only(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    with open(log, "wb") as f:
        f.write(b"x" * (8 * 2**20))
        f.write(b"the last words\n")
    text = read_console(log)
    assert len(text) == CONSOLE_TAIL_BYTES and text.endswith("the last words\n")
    assert console_size(log) == 8 * 2**20 + 15
    assert read_console(tmp_path / "none.log") == "" and console_size(tmp_path / "n") == 0


def _as_nobody(call: Callable[[], str]) -> str:
    """``call()`` in a forked child that dropped to the user nobody: what it returned."""
    import pwd
    nobody = pwd.getpwnam("nobody")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            os.write(write_end, call().encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        out = f.read().decode()
    os.waitpid(pid, 0)
    return out


def test_an_unreadable_console_says_what_to_do(tmp_path: Path) -> None:
    """As virtlogd leaves it under qemu:///system: root's, 0600, and the worker is not
    root (here: nobody). The probe says why instead of timing out on an empty console."""
    os.chmod(tmp_path, 0o755)
    log = tmp_path / "console.log"
    log.write_text("XWVM-PROBE-OK\n")
    log.chmod(0o600)
    out = _as_nobody(lambda: wait_for_marker(log, ["XWVM-PROBE-OK"], lambda: True, 2))
    assert "not readable by this worker" in out and "qemu:///session" in out, out
    assert wait_for_marker(log, ["XWVM-PROBE-OK"], lambda: True, 2) == ""  # root reads it
