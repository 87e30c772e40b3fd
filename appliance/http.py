"""The guest's HTTP client: the standard library's, for the few calls the nested worker
makes to the server through its forwarded port.

TLS is verified against the context's CA only (the server's name is
:data:`xwvm.protocol.GUEST_SERVER_NAME`, in its certificate), the delegated credential is
a bearer token, and redirects are never followed (the server never sends one; a hostile
one must not point the guest elsewhere). Errors carry the HTTP status (0: no answer);
transient ones are retried with the protocol's one policy (xwvm.protocol.retry).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, TypeVar
from urllib.parse import urlsplit

from appliance.errors import GuestError, status_of
from xwvm.protocol import paths
from xwvm.protocol.calls import ProgressAnswer, Report, WorkAnswer
from xwvm.protocol.digest import sha256_file
from xwvm.protocol.retry import Backoff, retrying
from xwvm.protocol.vocab import MAX_MESSAGE, JobStatus

BLOCK = 1 << 20
MAX_ERROR_BODY = 64 * 1024
T = TypeVar("T")


class Server:
    """The server as the nested worker sees it: ``base`` (https://host:port), the CA file
    that must have signed its certificate, and the delegated token."""

    def __init__(self, base: str, ca_file: Path, token: str, timeout: float = 60.0,
                 backoff: Backoff = Backoff()) -> None:
        url = urlsplit(base)
        if url.scheme != "https" or not url.hostname:
            raise GuestError(f"the server URL must be https://host[:port], not {base!r}")
        self.host, self.port = url.hostname, url.port or 443
        self.tls = ssl.create_default_context(cafile=str(ca_file))  # only the context's CA
        self.token, self.timeout, self.backoff = token, timeout, backoff

    # --- the calls the nested worker makes -------------------------------------------------

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """POST JSON, answer JSON (retried: the nested worker's posts are idempotent)."""
        data = json.dumps(body or {}).encode()
        return self.retried(lambda: self._json("POST", path, data))

    def download(self, data_uid: str, dest: Path, sha256: str) -> Path:
        """A data object's content to ``dest`` (through ``dest.part``), checked against
        ``sha256`` before it takes its name. A transient failure is retried from where
        the partial file ends (Range, with If-Range on the sha256 ETag)."""
        return self.retried(lambda: self._download(paths.data_content(data_uid), dest, sha256))

    def upload_result(self, job_uid: str, archive: Path) -> Any:
        """PUT a job's results archive, with its sha256 for the server to check."""
        sha, size = sha256_file(archive), Path(archive).stat().st_size
        return self.retried(lambda: self._upload(paths.work_result(job_uid), archive, size,
                                                 sha))

    def report(self, uid: str, status: JobStatus, exit_code: int | None,
               message: str | None) -> Any:
        """A pilot's report on a job it ran."""
        return self.post(paths.work_report(uid),
                         Report(status, exit_code, message).to_json())

    def progress(self, uid: str, phase: str) -> ProgressAnswer:
        """A sign of life of job ``uid``'s payload; the answer says whether to end it."""
        return ProgressAnswer.from_json(self.post(paths.work_progress(uid),
                                                  {"phase": phase}))

    def pilot_work(self, pilot_uid: str) -> WorkAnswer:
        """The next job for pilot ``pilot_uid``; its ``work`` is None when none waits
        (:class:`~xwvm.protocol.calls.MalformedJob` when one does not read)."""
        return WorkAnswer.from_json(self.post(paths.pilot_work(pilot_uid)))

    def retried(self, fn: Callable[[], T]) -> T:
        got = retrying(fn, status_of, self.backoff)
        assert got is not None  # retrying returns None only when its sleep says stop
        return got

    # --- plumbing ---------------------------------------------------------------------------

    def _json(self, method: str, path: str, data: bytes) -> Any:
        with self._request(method, path, data, {"Content-Type": "application/json"}) as resp:
            return _json_answer(resp, method, path)

    def _download(self, path: str, dest: Path, sha256: str) -> Path:
        part = Path(dest).with_name(Path(dest).name + ".part")
        digest, have = _partial(part)
        headers = {"Range": f"bytes={have}-", "If-Range": f'"{sha256}"'} if have else {}
        try:
            with self._request("GET", path, None, headers) as resp:
                if resp.status != 206:  # the whole file (or no partial one): from zero
                    digest, have = hashlib.sha256(), 0
                with part.open("ab" if have else "wb") as out:
                    _copy(resp, out, digest, path)
        except GuestError as e:
            if e.status != 416:  # 416: the partial file is whole already, or bogus
                raise
            if digest.hexdigest() != sha256:
                part.unlink()
                return self._download(path, dest, sha256)
        if digest.hexdigest() != sha256:
            part.unlink()
            raise GuestError(f"the download of {path} does not match its sha256", 0,
                             "checksum_mismatch")
        os.replace(part, dest)
        return Path(dest)

    def _upload(self, path: str, archive: Path, size: int, sha: str) -> Any:
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size),
                   "X-Content-SHA256": sha}
        with Path(archive).open("rb") as body, \
                self._request("PUT", path, body, headers) as resp:
            return _json_answer(resp, "PUT", path)

    @contextlib.contextmanager
    def _request(self, method: str, path: str, body: bytes | BinaryIO | None = None,
                 headers: dict[str, str] | None = None) -> Iterator[http.client.HTTPResponse]:
        """The answer to one request when it is a success (its connection closed after);
        GuestError with its status (0 when none came) otherwise."""
        conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout,
                                           context=self.tls)
        try:
            resp = self._send(conn, method, path, body, headers or {})
            if not 200 <= resp.status < 300:
                raise _error(method, path, resp)
            yield resp
        finally:
            conn.close()

    def _send(self, conn: http.client.HTTPSConnection, method: str, path: str,
              body: bytes | BinaryIO | None, headers: dict[str, str]
              ) -> http.client.HTTPResponse:
        try:
            conn.request(method, paths.API_PREFIX + path, body=body,
                         headers={**headers, "Authorization": f"Bearer {self.token}"})
            return conn.getresponse()
        except ssl.SSLError as e:
            raise GuestError(f"TLS verification of the server failed: {e}", 0,
                             "tls_error") from None
        except (OSError, http.client.HTTPException) as e:
            raise GuestError(f"{method} {path}: no answer ({e.__class__.__name__})", 0,
                             "unreachable") from None


def _copy(resp: http.client.HTTPResponse, out: BinaryIO, digest: Any, path: str) -> None:
    """The answer's body to ``out`` and ``digest``; one shorter than its Content-Length
    broke off (no answer: retried, and the partial file kept for the next attempt)."""
    declared, got = resp.getheader("Content-Length"), 0
    for block in iter(lambda: _read(resp, path), b""):
        digest.update(block)
        out.write(block)
        got += len(block)
    if declared is not None and declared.isdigit() and got < int(declared):
        raise GuestError(f"{path}: the answer broke off after {got} bytes", 0, "unreachable")


def _partial(part: Path) -> tuple[Any, int]:
    """(the sha256 so far, the length) of an earlier attempt's partial file."""
    digest, have = hashlib.sha256(), 0
    if part.exists():
        with part.open("rb") as f:
            for block in iter(lambda: f.read(BLOCK), b""):
                digest.update(block)
                have += len(block)
    return digest, have


def _json_answer(resp: http.client.HTTPResponse, method: str, path: str) -> Any:
    try:
        return json.loads(_read(resp, path, -1) or b"null")
    except ValueError:
        raise GuestError(f"{method} {path}: the answer is not JSON", resp.status) from None


def _read(resp: http.client.HTTPResponse, path: str, n: int = BLOCK) -> bytes:
    """Up to ``n`` bytes of the answer (-1: all); a stream that breaks is no answer."""
    try:
        return resp.read(n) if n >= 0 else resp.read()
    except (OSError, http.client.HTTPException) as e:
        raise GuestError(f"{path}: the answer broke off ({e.__class__.__name__})", 0,
                         "unreachable") from None


def _error(method: str, path: str, resp: http.client.HTTPResponse) -> GuestError:
    """The server's JSON error; anything else (a redirect, a proxy's page) by its status
    and path only: a body that is not the API's never goes into a message."""
    try:
        body = json.loads(resp.read(MAX_ERROR_BODY))
    except (ValueError, OSError, http.client.HTTPException):
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return GuestError(body["message"][:MAX_MESSAGE], resp.status,
                          str(body.get("error", "error")))
    return GuestError(f"HTTP {resp.status} from {method} {path}", resp.status, "http_error")
