"""A unix-socket relay between the libvirt driver and the tests' own libvirtd.

Killing the test's libvirtd loses its domains (libvirt's test driver keeps them in memory),
while a real libvirtd restart leaves QEMU domains running and re-attaches to them. The
relay shows a client what such a restart looks like with the daemon's state kept: it cuts
the driver's connection (``cut``), refuses new ones for a while (``outage``), or drops one
reply from libvirtd and the connection with it (``swallow_reply``: the call was done, its
answer never came). It forwards bytes only; it knows nothing of libvirt's protocol.
"""

from __future__ import annotations

import socket
import threading
from contextlib import suppress
from pathlib import Path


class Relay:
    def __init__(self, path: Path, target: Path) -> None:
        self.path, self.target = path, target
        self.swallowed = 0
        self._swallow_at = 0  # drop the n-th reply from now (0: none)
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._listener: socket.socket | None = None
        self._lock = threading.Lock()
        self.up()

    def up(self) -> None:
        """Accept connections (again)."""
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.path.unlink(missing_ok=True)
        listener.bind(str(self.path))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        """Refuse connections (the socket is gone, as while libvirtd restarts) and cut
        the open ones."""
        listener, self._listener = self._listener, None
        if listener is not None:
            _close(listener)
        self.path.unlink(missing_ok=True)
        self.cut()

    def outage(self, seconds: float) -> threading.Timer:
        """Down now, up again after ``seconds``."""
        self.down()
        timer = threading.Timer(seconds, self.up)
        timer.start()
        return timer

    def cut(self) -> None:
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for client, daemon in pairs:
            _close(client)
            _close(daemon)

    def swallow_reply(self, n: int = 1) -> None:
        """Drop the ``n``-th reply from libvirtd from now on, and cut that connection."""
        with self._lock:
            self._swallow_at = n

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            daemon = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                daemon.connect(str(self.target))
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._pairs.append((client, daemon))
            threading.Thread(target=self._pump, args=(client, daemon, False),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(daemon, client, True),
                             daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, replies: bool) -> None:
        while True:
            try:
                data = src.recv(1 << 20)
            except OSError:
                data = b""
            if data and replies and self._swallow():
                data = b""
            if not data:
                break
            try:
                dst.sendall(data)
            except OSError:
                break
        _close(src)
        _close(dst)

    def _swallow(self) -> bool:
        with self._lock:
            if self._swallow_at == 0:
                return False
            self._swallow_at -= 1
            if self._swallow_at:
                return False
            self.swallowed += 1
            return True


def _close(sock: socket.socket) -> None:
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with suppress(OSError):
        sock.close()
