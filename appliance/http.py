"""The guest's HTTP client: the standard library's, for the few calls the nested worker
makes to the server through its forwarded port.

TLS is verified against the context's CA only (the server's name is
:data:`xwvm.protocol.GUEST_SERVER_NAME`, in its certificate), the delegated credential is
a bearer token, and redirects are never followed (the server never sends one; a hostile
one must not point the guest elsewhere). Errors carry the HTTP status (0: no answer).

Transient failures (no answer, any 5xx, 408, 429: the outer worker's rule) are retried
with the protocol's one policy (xwvm.protocol.retry). With a ``deadline`` (the job's
wall clock, see appliance.nested.job_deadline) and :data:`PATIENT` backoff, the calls the
job's delivery depends on wait out a server outage until that deadline, logging once when
the outage starts and once when it ends; a definite refusal (400, 401, 403, 404, 409,
413...) ends them at once. Progress beats are never retried: the next beat is the retry.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, TypeVar
from urllib.parse import urlsplit

from appliance.errors import GuestError
from xwvm.protocol import paths
from xwvm.protocol.calls import ProgressAnswer, Report, WorkAnswer
from xwvm.protocol.digest import sha256_file
from xwvm.protocol.retry import Backoff, retrying
from xwvm.protocol.vocab import MAX_MESSAGE, JobStatus

log = logging.getLogger("xwvm.guest.http")
BLOCK = 1 << 20
MAX_ERROR_BODY = 64 * 1024
T = TypeVar("T")
#: While the server does not answer: 1 s, doubling, at most 30 s apart, until the deadline.
PATIENT = Backoff(first=1.0, cap=30.0, attempts=None)
#: What an outage that outlasted the deadline is called (GuestError.code, status 0).
OUTAGE = "server_unreachable"


def failure_status(e: Exception) -> int | None:
    """For :func:`retrying`, the outer worker's rule (xwvm.worker.pull): no answer, any 5xx,
    408 and 429 are transient (read as 503). A certificate the context's CA did not sign
    and a download that does not match its sha256 (both status 0) are not: None, as for
    anything that is not a failed request, re-raises at once."""
    if not isinstance(e, GuestError) or e.status is None:
        return None
    if e.status == 0:
        return 0 if e.code == "unreachable" else None
    if e.status >= 500 or e.status in (408, 429):
        return 503
    return e.status


def is_refusal(e: GuestError) -> bool:
    """The server answered, and said no: retrying will not change its mind."""
    return bool(e.status) and failure_status(e) != 503


class Server:
    """The server as the nested worker sees it: ``base`` (https://host:port), the CA file
    that must have signed its certificate, and the delegated token."""

    def __init__(self, base: str, ca_file: Path, token: str, timeout: float = 60.0,
                 backoff: Backoff = Backoff(), deadline: float | None = None) -> None:
        """``deadline``: the time.monotonic() after which a call no longer waits for the
        server (None: ``backoff``'s attempts alone bound the retries)."""
        url = urlsplit(base)
        if url.scheme != "https" or not url.hostname:
            raise GuestError(f"the server URL must be https://host[:port], not {base!r}")
        self.host, self.port = url.hostname, url.port or 443
        self.tls = ssl.create_default_context(cafile=str(ca_file))  # only the context's CA
        self.token, self.timeout, self.backoff = token, timeout, backoff
        self.deadline = deadline

    # --- the calls the nested worker makes -------------------------------------------------

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """POST JSON, answer JSON (retried: the nested worker's posts are idempotent)."""
        data = json.dumps(body or {}).encode()
        return self.retried(lambda: self._json("POST", path, data), f"POST {path}")

    def download(self, data_uid: str, dest: Path, sha256: str) -> Path:
        """A data object's content to ``dest`` (through ``dest.part``), checked against
        ``sha256`` before it takes its name. A transient failure is retried from where
        the partial file ends (Range, with If-Range on the sha256 ETag)."""
        return self.retried(lambda: self._download(paths.data_content(data_uid), dest, sha256),
                            f"the download of input data {data_uid}")

    def upload_result(self, job_uid: str, archive: Path) -> Any:
        """PUT a job's results archive, with its sha256 for the server to check. Every
        attempt sends the whole archive again, from the file the caller keeps."""
        sha, size = sha256_file(archive), Path(archive).stat().st_size
        return self.retried(lambda: self._upload(paths.work_result(job_uid), archive, size,
                                                 sha), f"the upload of job {job_uid}'s results")

    def report(self, uid: str, status: JobStatus, exit_code: int | None,
               message: str | None) -> Any:
        """A pilot's report on a job it ran."""
        return self.post(paths.work_report(uid),
                         Report(status, exit_code, message).to_json())

    def progress(self, uid: str, phase: str) -> ProgressAnswer:
        """A sign of life of job ``uid``'s payload; the answer says whether to end it.
        One attempt only: a beat that waited out an outage would hold back the next ones."""
        data = json.dumps({"phase": phase}).encode()
        return ProgressAnswer.from_json(self._json("POST", paths.work_progress(uid), data))

    def pilot_work(self, pilot_uid: str) -> WorkAnswer:
        """The next job for pilot ``pilot_uid``; its ``work`` is None when none waits
        (:class:`~xwvm.protocol.calls.MalformedJob` when one does not read)."""
        return WorkAnswer.from_json(self.post(paths.pilot_work(pilot_uid)))

    def retried(self, fn: Callable[[], T], what: str) -> T:
        """``fn``, with transient failures retried until the backoff's attempts or the
        deadline run out (GuestError ``OUTAGE`` then); a refusal is raised at once."""
        outage = _Outage(what, self.deadline)
        got = retrying(fn, failure_status, self.backoff, sleep=outage.wait,
                       on_retry=outage.failed)
        if outage.gave_up:
            raise outage.error()
        outage.over()
        return got  # type: ignore[return-value]  # None only when outage.gave_up

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
            if have:  # resumed on a partial file that was not a prefix: once, from zero
                return self._download(path, dest, sha256)
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
        conn = http.client.HTTPSConnection(self.host, self.port, timeout=self._timeout(),
                                           context=self.tls)
        try:
            resp = self._send(conn, method, path, body, headers or {})
            if not 200 <= resp.status < 300:
                raise _error(method, path, resp)
            yield resp
        finally:
            conn.close()

    def _timeout(self) -> float:
        """A socket's timeout: ``timeout``, but an attempt never waits past the deadline
        (an unanswered connection through the host's relay waits, it is not refused)."""
        if self.deadline is None:
            return self.timeout
        return max(1.0, min(self.timeout, self.deadline - time.monotonic()))

    def _send(self, conn: http.client.HTTPSConnection, method: str, path: str,
              body: bytes | BinaryIO | None, headers: dict[str, str]
              ) -> http.client.HTTPResponse:
        try:
            conn.request(method, paths.API_PREFIX + path, body=body,
                         headers={**headers, "Authorization": f"Bearer {self.token}"})
            return conn.getresponse()
        except ssl.SSLCertVerificationError as e:
            raise GuestError(f"TLS verification of the server failed: {e}", 0,
                             "tls_error") from None
        except (OSError, http.client.HTTPException) as e:
            raise GuestError(f"{method} {path}: no answer ({e.__class__.__name__})", 0,
                             "unreachable") from None


class _Outage:
    """One call's wait for the server: said when it starts and when it ends (not once per
    attempt), and how long it lasted when it outlasts the deadline."""

    def __init__(self, what: str, deadline: float | None) -> None:
        self.what, self.deadline = what, deadline
        self.since: float | None = None
        self.last: Exception | None = None
        self.attempts, self.gave_up = 0, False

    def failed(self, e: Exception, delay: float) -> None:
        self.last, self.attempts = e, self.attempts + 1
        if self.since is None:
            self.since = time.monotonic()
            left = "" if self.deadline is None else \
                f" for up to {max(0.0, self.deadline - self.since):.0f} s"
            log.warning("%s: %s; retrying%s", self.what, e, left)

    def wait(self, delay: float) -> bool:
        """Sleep ``delay`` (never past the deadline); True: the deadline has passed."""
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                self.gave_up = True
                return True
            delay = min(delay, left)
        time.sleep(delay)
        return False

    def over(self) -> None:
        if self.since is not None:
            log.warning("%s: the server answers again after %.0f s (%d failed attempts)",
                        self.what, time.monotonic() - self.since, self.attempts)

    def error(self) -> GuestError:
        waited = time.monotonic() - (self.since or time.monotonic())
        message = (f"{self.what}: the server did not answer for {waited:.0f} s "
                   f"({self.attempts} attempts), until the job's wall-clock deadline; "
                   f"last: {self.last}")
        log.warning("%s", message)
        return GuestError(message[:MAX_MESSAGE], 0, OUTAGE)


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
