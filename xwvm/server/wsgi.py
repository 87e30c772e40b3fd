"""`xwvm server run`: the application served by gunicorn over TLS, with every request body
read against a deadline (a slow or endless body cannot hold a worker thread)."""

from __future__ import annotations

import multiprocessing
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from typing import Any

from gunicorn.app.base import BaseApplication
from werkzeug.exceptions import RequestTimeout

from xwvm.server import datadir
from xwvm.server.config import ServerConfig
from xwvm.server.db.engine import make_engine, migrate

WSGIApp = Callable[[dict[str, Any], Any], Any]


class XwvmGunicorn(BaseApplication):
    def __init__(self, config: ServerConfig, options: dict[str, Any]) -> None:
        self.config_obj = config
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from xwvm.server import sweeping
        from xwvm.server.app import create_app
        app = create_app(self.config_obj)
        sweeping.start(app)  # in each gunicorn worker; the claims keep one sweep per interval
        return guard_bodies(app, self.config_obj)


def bounded_tls(bound_s: float) -> Callable[[Any, Callable[[], ssl.SSLContext]], Any]:
    """gunicorn's ``ssl_context`` hook: client connections whose every blocking receive and
    send waits at most ``bound_s`` for progress.

    gthread hands a new connection to a thread, which then blocks in the TLS handshake and
    in reading the request line for as long as the client likes: a few dozen connections
    that finish (or only start) a handshake and send nothing held every thread. gunicorn
    puts its sockets in blocking mode; on these sockets "blocking" means a timeout of
    ``bound_s`` instead, so a stalled connection fails and is closed. Bodies have a stricter
    deadline of their own (_BodyDeadline); the wait between keep-alive requests is in
    gunicorn's poller, not here."""

    class BoundedSSLSocket(ssl.SSLSocket):
        def settimeout(self, value: float | None) -> None:
            super().settimeout(bound_s if value is None else value)

        def setblocking(self, flag: bool) -> None:
            self.settimeout(None if flag else 0.0)

    def ssl_context(_conf: Any, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        ctx = default()
        ctx.sslsocket_class = BoundedSSLSocket
        return ctx

    return ssl_context


class _BodyDeadline:
    """A deadline for reading one request's body: ``timeout_s`` from the request's start,
    plus a second for every ``min_rate`` bytes received (Apache mod_reqtimeout's rule).

    It is enforced on the connection's socket: every receive waits at most until the
    deadline. A timeout on the whole wsgi.input read would not do: gunicorn loops on
    receives until it has what was asked for, and a client that sends one byte a second
    resets any per-receive timeout forever. A receive timing out leaves a TLS connection
    usable, so the 408 answer still reaches the client."""

    def __init__(self, sock: socket.socket, timeout_s: float, min_rate: int) -> None:
        self._sock, self._recv, self._min_rate = sock, sock.recv, max(1, min_rate)
        self.deadline = time.monotonic() + timeout_s
        self.expired = False

    def install(self) -> None:
        self._sock.recv = self.recv  # type: ignore[method-assign]

    def uninstall(self) -> None:
        vars(self._sock).pop("recv", None)
        self._sock.settimeout(None)

    def recv(self, size: int, *flags: int) -> bytes:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            self.expired = True
            raise TimeoutError("request body deadline")
        self._sock.settimeout(remaining)
        try:
            data = self._recv(size, *flags)
        except TimeoutError:
            self.expired = True
            raise
        self.deadline += len(data) / self._min_rate
        return data


class _GuardedInput:
    """``wsgi.input`` that turns an expired body deadline into 408 Request Timeout."""

    def __init__(self, stream: Any, deadline: _BodyDeadline) -> None:
        self._stream, self._deadline = stream, deadline

    def read(self, size: int | None = -1) -> bytes:
        return self._guarded(self._stream.read, size)

    def readline(self, size: int | None = -1) -> bytes:
        return self._guarded(self._stream.readline, size)

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        return list(iter(self.readline, b""))

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")

    def _guarded(self, read: Any, size: int | None) -> bytes:
        try:
            return read(size)
        except Exception:
            if self._deadline.expired:  # not an OSError: Werkzeug would call it a disconnect
                raise RequestTimeout("the request body came too slowly: the server stopped "
                                     "waiting for it") from None
            raise


def guard_bodies(app: WSGIApp, config: ServerConfig) -> WSGIApp:
    """Every request body read against a deadline (see _BodyDeadline)."""
    def wrapped(environ: dict[str, Any], start_response: Any) -> Any:
        sock = environ.get("gunicorn.socket")
        if not isinstance(sock, socket.socket):
            return app(environ, start_response)
        deadline = _BodyDeadline(sock, config.body_timeout_s, config.body_min_rate)
        environ["wsgi.input"] = _GuardedInput(environ["wsgi.input"], deadline)
        deadline.install()
        try:
            return app(environ, start_response)
        finally:
            deadline.uninstall()
    return wrapped


def run(config: ServerConfig, bind: str, workers: int | None = None, threads: int = 8,
        tls: bool = True) -> None:
    datadir.restrict_process()  # before anything (SQLite, gunicorn's workers) makes a file
    datadir.tighten(config.data_dir, datadir.sqlite_files(config.db_url))
    engine = make_engine(config.db_url)
    migrate(engine)  # a newer xwvm brings its schema changes with it
    engine.dispose()
    options: dict[str, Any] = {
        "bind": bind,
        "workers": workers or max(2, multiprocessing.cpu_count()),
        "threads": threads,
        "worker_class": "gthread",
        "timeout": 600,
        "graceful_timeout": 10,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
    }
    if tls:
        options.update(certfile=str(config.server_cert), keyfile=str(config.server_key),
                       ssl_context=bounded_tls(float(config.body_timeout_s)))
    XwvmGunicorn(config, options).run()
