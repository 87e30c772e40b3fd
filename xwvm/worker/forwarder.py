"""One VM's connections to the server: a capped, idle-timed relay in the worker process.

QEMU's user network (SLIRP in restrict mode) reaches the host only through ``guestfwd``,
and its only form that serves more than one connection starts a command per guest
connection (the chardev form carries every connection on one stream, without
boundaries). A guest that opened 200 connections so got 200 host processes, outside
its memory cap. So the command is a fixed helper (``socat - UNIX-CONNECT:<socket>``) and
this forwarder, one per VM, is what it reaches: at most ``max_connections`` relays at
a time (the others are closed at once, and their helpers exit with them), each closed
after ``idle_timeout_s`` without a byte either way. The worker owns the socket (0600,
handed to the QEMU user when QEMU runs as another one); the forwarder alone opens
connections to the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
from pathlib import Path

log = logging.getLogger("xwvm.worker.forwarder")
MAX_CONNECTIONS = 16       # a nested worker uses one or two; a pilot a few more
IDLE_TIMEOUT_S = 120.0     # no byte either way for this long: the relay is closed
CONNECT_TIMEOUT_S = 10.0
CHUNK = 64 * 1024
SUN_PATH_MAX = 107         # sockaddr_un's sun_path, less its terminating NUL


class Forwarder:
    """Relays connections on the unix socket ``path`` to ``target`` (host, port)."""

    def __init__(self, path: Path, target: tuple[str, int],
                 max_connections: int = MAX_CONNECTIONS,
                 idle_timeout_s: float = IDLE_TIMEOUT_S) -> None:
        if len(os.fsencode(path)) > SUN_PATH_MAX:
            raise ValueError(f"socket path {path} is longer than {SUN_PATH_MAX} bytes")
        self.path, self.target = Path(path), target
        self.max_connections, self.idle_timeout_s = max_connections, idle_timeout_s
        self.active = self.accepted = self.refused = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    def start(self) -> Forwarder:
        """Listen (the socket exists, 0600, when this returns)."""
        self.path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(self.path))
            os.chmod(self.path, 0o600)  # before listen(): nobody else connects meanwhile
            sock.listen(64)
        except OSError:
            sock.close()
            raise
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(sock),),
                                        name=f"forwarder {self.path.parent.name}",
                                        daemon=True)
        self._thread.start()
        self._ready.wait(10)
        return self

    def allow(self, uid: int) -> None:
        """Let user ``uid`` (the QEMU process's) connect."""
        if uid != os.geteuid():
            os.chown(self.path, uid, -1, follow_symlinks=False)

    def stop(self) -> None:
        """Close every relay and the socket. Idempotent."""
        if self._loop is not None and self._done is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                self._loop.call_soon_threadsafe(self._done.set)
        if self._thread is not None:
            self._thread.join(10)
        self.path.unlink(missing_ok=True)

    # --- in the forwarder's thread --------------------------------------------------------

    async def _serve(self, sock: socket.socket) -> None:
        self._loop, self._done = asyncio.get_running_loop(), asyncio.Event()
        tasks: set[asyncio.Task[None]] = set()

        def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.ensure_future(self._relay(reader, writer))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        server = await asyncio.start_unix_server(on_client, sock=sock)
        self._ready.set()
        try:
            await self._done.wait()
        finally:
            server.close()
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.active >= self.max_connections:
            self.refused += 1
            writer.close()
            return
        self.active += 1
        self.accepted += 1
        upstream: asyncio.StreamWriter | None = None
        try:
            up_reader, upstream = await asyncio.wait_for(
                asyncio.open_connection(*self.target), CONNECT_TIMEOUT_S)
            await self._pump_both(reader, writer, up_reader, upstream)
        except (OSError, TimeoutError) as e:
            log.debug("relay to %s:%d ended: %s", *self.target, e)
        finally:
            self.active -= 1
            for w in (writer, upstream):
                if w is not None:
                    w.close()

    async def _pump_both(self, a_r: asyncio.StreamReader, a_w: asyncio.StreamWriter,
                         b_r: asyncio.StreamReader, b_w: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        last = [loop.time()]

        async def pump(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            while data := await r.read(CHUNK):
                last[0] = loop.time()
                w.write(data)
                await w.drain()
            if w.can_write_eof():  # half-close: the other direction may still talk
                w.write_eof()

        pending = {asyncio.ensure_future(pump(a_r, b_w)), asyncio.ensure_future(pump(b_r, a_w))}
        try:
            while pending:
                done, pending = await asyncio.wait(pending, timeout=1.0)
                for task in done:
                    task.result()  # an error in either direction ends the relay
                if loop.time() - last[0] > self.idle_timeout_s:
                    return
        finally:
            for task in pending:
                task.cancel()
