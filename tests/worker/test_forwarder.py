"""The per-VM forwarder (issue 13, hole 4) without a VM: it relays, caps concurrent
connections, closes idle ones, and its socket is the worker's alone.

The real guest's flood is tests/e2e/test_connection_flood.py.
"""

from __future__ import annotations

import socket
import socketserver
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from xwvm.worker.forwarder import Forwarder


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(4096):
            self.request.sendall(data)


@pytest.fixture
def echo() -> Iterator[tuple[str, int]]:
    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[0], srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def _connect(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(str(path))
    return s


def _echoes(s: socket.socket) -> bool:
    try:
        s.sendall(b"ping")
        return s.recv(4) == b"ping"
    except OSError:
        return False


def test_relays_at_most_the_cap_and_refuses_the_rest(tmp_path: Path,
                                                    echo: tuple[str, int]) -> None:
    fwd = Forwarder(tmp_path / "s.sock", echo, max_connections=3).start()
    try:
        assert stat.S_IMODE((tmp_path / "s.sock").stat().st_mode) == 0o600
        held = [_connect(fwd.path) for _ in range(3)]
        assert all(_echoes(s) for s in held)
        extra = [_connect(fwd.path) for _ in range(20)]
        assert not any(_echoes(s) for s in extra), "over the cap: closed at once"
        assert fwd.active == 3 and fwd.refused == 20
        for s in held:
            s.close()
        deadline = time.monotonic() + 5
        while fwd.active and time.monotonic() < deadline:
            time.sleep(0.05)
        again = _connect(fwd.path)
        assert _echoes(again), "room again once the held ones closed"
        again.close()
        for s in extra:
            s.close()
    finally:
        fwd.stop()
    assert not (tmp_path / "s.sock").exists()


def test_an_idle_connection_is_closed(tmp_path: Path, echo: tuple[str, int]) -> None:
    fwd = Forwarder(tmp_path / "s.sock", echo, max_connections=1, idle_timeout_s=1).start()
    try:
        s = _connect(fwd.path)
        assert _echoes(s)
        time.sleep(3)
        assert s.recv(1) == b"", "the idle relay was closed"
        assert fwd.active == 0
        assert _echoes(_connect(fwd.path))
    finally:
        fwd.stop()


def test_a_socket_path_too_long_for_unix_sockets_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="longer than"):
        Forwarder(tmp_path / ("x" * 120), ("127.0.0.1", 1))
