"""Request bodies as an attacker sends them, over TLS on raw sockets: huge and endless
chunked bodies, a body at one byte a second, malformed JSON, wrong types and deep
nesting. The server's memory stays bounded (the RSS of its gunicorn workers is measured)
and no answer echoes what was sent."""

from __future__ import annotations

import json
import select
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import ServerProcess

MARK = b"ZQX-marker-31337-"
MiB = 1024 * 1024
BODY_TIMEOUT_S = 3


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    s = ServerProcess(tmp_path_factory.mktemp("bodies"), workers=2,
                      env={"XWVM_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S)}).init().start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def token(srv: ServerProcess) -> str:
    return srv.client().token


def _workers_rss_kib(srv: ServerProcess) -> int:
    """The peak resident memory (VmHWM) of the server's gunicorn workers (children of
    the master): a body read whole and freed again still shows."""
    assert srv.proc is not None
    total = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines()
                          if ":" in line)
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(srv.proc.pid) and "VmHWM" in fields:
            total += int(fields["VmHWM"].split()[0])
    assert total > 0
    return total


def _open(srv: ServerProcess, method: str, path: str, headers: dict[str, str]) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=str(srv.ca))
    sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", srv.port), timeout=60),
                           server_hostname="127.0.0.1")
    head = [f"{method} /api/v1{path} HTTP/1.1", f"Host: 127.0.0.1:{srv.port}",
            *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    sock.sendall("\r\n".join(head).encode())
    return sock


def _poll(sock: ssl.SSLSocket, wait_s: float) -> bytes | None:
    """What the server sent within ``wait_s`` (b"" if it closed), None if nothing yet.
    (A readable socket alone says little: TLS 1.3 session tickets arrive unasked.)"""
    if not select.select([sock], [], [], wait_s)[0]:
        return None
    sock.settimeout(0.2)
    try:
        return sock.recv(65536)
    except (TimeoutError, ssl.SSLWantReadError):
        return None
    except OSError:
        return b""
    finally:
        sock.settimeout(60)


def _answer(sock: ssl.SSLSocket, wait_s: float = 60,
            data: bytes = b"") -> tuple[int | None, bytes]:
    """The status and raw bytes of whatever the server answered (None: cut off)."""
    sock.settimeout(wait_s)
    try:
        while chunk := sock.recv(65536):
            data += chunk
            if b"\r\n\r\n" in data and _complete(data):
                break
    except (OSError, ssl.SSLError):
        pass
    sock.close()
    if not data.startswith(b"HTTP/1.1 "):
        return None, data
    return int(data.split()[1]), data


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def _stream(srv: ServerProcess, path: str, token: str | None, prefix: bytes,
            total: int | None, method: str = "POST") -> tuple[int | None, bytes, int]:
    """Send a chunked body (``prefix``, then the marker, for ``total`` bytes or without
    end) until the server answers or cuts the connection; returns status, answer, sent."""
    headers = {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    sock = _open(srv, method, path, headers)
    piece = MARK * (MiB // len(MARK))
    sent, first, got = 0, True, None
    try:
        while total is None or sent < total:
            chunk = prefix + piece if first else piece
            first = False
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
            got = _poll(sock, 0)
            if got is not None:
                break  # the server answered before the end
            if total is None and sent > 512 * MiB:
                pytest.fail("the server read 512 MiB of an endless body")
        else:
            sock.sendall(b"0\r\n\r\n")
    except OSError:  # cut off: what it said before, if anything, is still read
        pass
    status, data = _answer(sock, data=got or b"")
    return status, data, sent


LOGIN = b'{"login": "admin", "password": "'


@pytest.mark.parametrize("path,prefix,total,needs_token", [
    ("/auth/login", LOGIN, 400 * MiB, False),
    ("/auth/login", LOGIN, None, False),  # endless
    ("/data", b'{"name": "', 200 * MiB, True),
    ("/data/0123456789abcdef0123456789abcdef/content", b"", 200 * MiB, True),
])
def test_huge_and_endless_chunked_bodies_keep_memory_bounded(
        srv: ServerProcess, token: str, path: str, prefix: bytes, total: int | None,
        needs_token: bool) -> None:
    before = _workers_rss_kib(srv)
    method = "PUT" if path.endswith("/content") else "POST"
    status, data, sent = _stream(srv, path, token if needs_token else None, prefix, total,
                                 method)
    grown_mib = (_workers_rss_kib(srv) - before) / 1024
    assert grown_mib < 100, f"workers grew by {grown_mib:.0f} MiB after {sent} bytes"
    assert status in (400, 404, 413, None), data[:500]
    assert sent < 64 * MiB, f"the server kept reading: {sent} bytes"
    assert MARK not in data and b"ZQX" not in data, data[:500]


def test_a_slow_body_is_cut_off(srv: ServerProcess) -> None:
    """One byte a second: the server stops waiting after its body timeout (408) and the
    worker thread is free again."""
    body = LOGIN + MARK + b'"}'
    sock = _open(srv, "POST", "/auth/login", {"Content-Type": "application/json",
                                              "Content-Length": str(len(body))})
    started, got = time.monotonic(), None
    for byte in body:
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            break
        got = _poll(sock, 1.0)
        if got is not None or time.monotonic() - started > 30:
            break
    status, data = _answer(sock, wait_s=5, data=got or b"")
    elapsed = time.monotonic() - started
    assert status == 408, (status, data[:300], elapsed)
    assert elapsed < BODY_TIMEOUT_S + 5, elapsed
    assert b"ZQX" not in data


def test_a_slow_chunked_body_is_cut_off(srv: ServerProcess) -> None:
    sock = _open(srv, "POST", "/auth/login", {"Content-Type": "application/json",
                                              "Transfer-Encoding": "chunked"})
    started, got = time.monotonic(), None
    for byte in (LOGIN + MARK) * 10:
        try:
            sock.sendall(b"1\r\n%s\r\n" % bytes([byte]))
        except OSError:
            break
        got = _poll(sock, 1.0)
        if got is not None or time.monotonic() - started > 30:
            break
    status, data = _answer(sock, wait_s=5, data=got or b"")
    assert status == 408 and time.monotonic() - started < BODY_TIMEOUT_S + 5, data[:300]
    assert b"ZQX" not in data


def _post(srv: ServerProcess, path: str, body: bytes, token: str | None = None
          ) -> tuple[int | None, dict[str, object], bytes]:
    headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    sock = _open(srv, "POST", path, headers)
    sock.sendall(body)
    status, data = _answer(sock)
    return status, json.loads(data.partition(b"\r\n\r\n")[2] or b"{}"), data


@pytest.mark.parametrize("body,code", [
    (b'{"login": "admin", "password": "' + MARK + b'", ', "malformed_json"),
    (b'{"login": "admin", "password": ' + MARK + b'}', "malformed_json"),
    (b'{"login": "admin", "password": ["' + MARK + b'"]}', "invalid_body"),
    (b'{"login": "admin", "password": {"' + MARK + b'": 1}}', "invalid_body"),
    (b'{"login": "admin", "password": "x", "' + MARK * 5 + b'": "' + MARK + b'"}',
     "invalid_body"),  # an unknown name is shown only if short and plain
    (b'{"login": "admin", "password": "' + MARK * 100 + b'"}', "invalid_body"),
    (b'{"login": "admin", "password": ' + b"[" * 100000 + b"]" * 100000 + b"}", "too_deep"),
    (b"[" * 100000 + b'"' + MARK + b'"' + b"]" * 100000, "too_deep"),
    (b'{"login": "admin", "password": ' + b"[" * 40 + b"]" * 40 + b"}", "too_deep"),
    (b'{"login": "admin", "password": 1' + b"0" * 5000 + b"}", "malformed_json"),
])
def test_bad_json_is_refused_without_echo(srv: ServerProcess, body: bytes, code: str) -> None:
    status, answer, raw = _post(srv, "/auth/login", body)
    assert (status, answer.get("error")) == (400, code), raw[:500]
    assert b"ZQX" not in raw and b"0" * 50 not in raw, raw[:500]


def test_wrong_types_on_an_authenticated_route_are_named_not_echoed(
        srv: ServerProcess, token: str) -> None:
    body = json.dumps({"name": [MARK.decode()], "size": MARK.decode(),
                       "sha256": {"k": MARK.decode()}}).encode()
    status, answer, raw = _post(srv, "/data", body, token)
    assert (status, answer.get("error")) == (400, "invalid_body"), raw[:500]
    assert {d["path"] for d in answer["details"]} >= {"/name", "/size"}, answer  # type: ignore
    assert b"ZQX" not in raw, raw[:500]


def test_valid_json_padded_past_the_limit_is_too_large(srv: ServerProcess) -> None:
    """Not truncated at the limit and parsed: a chunked body one byte too long is 413."""
    sock = _open(srv, "POST", "/auth/login", {"Content-Type": "application/json",
                                              "Transfer-Encoding": "chunked"})
    body = b'{"login": "admin", "password": "wrong-but-short"}'
    padding = b" " * (MiB - len(body) + 1)  # the default max_json_bytes, plus one
    for chunk in (body, padding):
        sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    sock.sendall(b"0\r\n\r\n")
    status, data = _answer(sock)
    assert status == 413 and b"too_large" in data, data[:300]


def test_idle_connections_do_not_hold_the_server(srv: ServerProcess) -> None:
    """Slowloris before any body: connections that finish TLS (or only start it) and then
    send nothing. gthread gives each a thread that waited forever: 2 workers x 8 threads
    were held by 16 such connections. Each is now closed once it has been idle for
    body_timeout_s of no progress, and a real client gets its answer meanwhile."""
    ctx = ssl.create_default_context(cafile=str(srv.ca))
    idle: list[socket.socket] = []
    try:
        for i in range(40):
            raw = socket.create_connection(("127.0.0.1", srv.port), timeout=60)
            if i % 4 == 0:
                raw.sendall(b"\x16\x03\x01")       # the first bytes of a ClientHello
                idle.append(raw)
            else:
                idle.append(ctx.wrap_socket(raw, server_hostname="127.0.0.1"))
        started = time.monotonic()
        sock = _open(srv, "GET", "/health", {"Connection": "close"})
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        sock.close()
        waited = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        assert waited < BODY_TIMEOUT_S * 6, waited
        # The ones that got a thread were closed (an idle one that never did waits in
        # gunicorn's poller, which holds no thread).
        closed = sum(1 for s in idle if _poll(s, BODY_TIMEOUT_S * 2) == b"")
        assert closed >= 16, f"{closed} of {len(idle)} idle connections closed"
    finally:
        for s in idle:
            s.close()
