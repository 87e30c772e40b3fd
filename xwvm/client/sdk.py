"""The Python SDK: one `Client` over the server's REST API (requests), used by the CLI and
by the worker; a method for every endpoint they call (paths from :mod:`xwvm.protocol.paths`),
one resumable downloader, and :func:`status_of`, which reads its errors for the retry
policy of :mod:`xwvm.protocol.retry`."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urljoin, urlsplit

import requests

from xwvm.errors import XwvmError
from xwvm.protocol import paths
from xwvm.protocol.calls import Report, WorkAnswer
from xwvm.protocol.digest import sha256_file
from xwvm.protocol.messages import JobDescription
from xwvm.protocol.vocab import MAX_MESSAGE, TERMINAL_STATUSES, Fault, JobStatus

CHUNK = 1024 * 1024
UPLOAD_CHUNK = 8 * 1024 * 1024  # one resumable-upload request
DOWNLOAD_BLOCK = 4 * 1024 * 1024
UIDS_PER_QUERY = 50
EVENT_PAGE = 1000
Progress = Callable[[int], None]
DEFAULT_PORTS = {"https": 443, "http": 80}
#: ApiError codes of a request that got no answer at all (retried as transient).
NO_ANSWER = ("unreachable", "timeout")
#: A token that has ended: renew it through ``Client.reauth`` (when set) and try once more.
REAUTH_CODES = ("token_expired", "token_revoked")


class ApiError(XwvmError):
    """An error answered by the server (its JSON body), or no answer at all."""

    @classmethod
    def from_response(cls, resp: requests.Response) -> ApiError:
        """The server's JSON error; anything else is named by status and path only: a
        body that is not the API's (a proxy's page, or worse) never goes into a message
        that may be reported back to the server."""
        try:
            body = resp.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("message"), str):
            return cls(body["message"][:MAX_MESSAGE], code=str(body.get("error", "error")),
                       status=resp.status_code, details=body.get("details"))
        return cls(f"HTTP {resp.status_code} {resp.reason or ''} from "
                   f"{resp.request.method} {urlsplit(resp.url).path}".replace("  ", " "),
                   code="http_error", status=resp.status_code)


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the scheme's default port filled in."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or DEFAULT_PORTS.get(scheme)


class _SameOriginSession(requests.Session):
    """Follows a redirect only to the server's own origin (scheme, host and port): a
    hostile server must not make a worker fetch from its LAN (a router's page) or over
    plain http. Anything else is refused before a connection is made."""

    def __init__(self, server: str) -> None:
        super().__init__()
        self.origin = origin(server)

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        target = super().get_redirect_target(resp)
        if target is None:
            return None
        absolute = urljoin(resp.url, target)
        if origin(absolute) != self.origin:
            resp.close()
            raise ApiError(f"the server redirected {resp.request.method} "
                           f"{urlsplit(resp.url).path} to another origin: refused",
                           code="offsite_redirect", status=0)
        return absolute


def _partial(part: Path, size: int | None) -> tuple[Any, int]:
    """(the sha256 so far, the length) of an earlier download's partial file; one longer
    than the declared ``size`` is bogus and removed."""
    digest, have = hashlib.sha256(), 0
    if part.exists() and size is not None and part.stat().st_size > size:
        part.unlink()
    if part.exists():
        with open(part, "rb") as f:
            for block in iter(lambda: f.read(DOWNLOAD_BLOCK), b""):
                digest.update(block)
                have += len(block)
    return digest, have


def _room(size: int | None, have: int) -> int | None:
    return None if size is None else size - have


def blocks(resp: requests.Response, limit: int | None) -> Iterator[bytes]:
    """The body in blocks of our size (never the server's), stopping with ``too_large``
    past ``limit`` bytes (a hostile server may stream forever); a body that breaks off is
    no answer (``unreachable``, transient: a resumed download continues from there)."""
    got, where = 0, urlsplit(resp.url).path
    try:
        for block in resp.iter_content(DOWNLOAD_BLOCK):
            got += len(block)
            if limit is not None and got > limit:
                raise ApiError(f"the server sent more than the declared size for {where}: "
                               "download stopped", code="too_large", status=0)
            yield block
    except requests.exceptions.RequestException as e:
        raise ApiError(f"the download of {where} broke off ({e.__class__.__name__})",
                       code="unreachable", status=0) from None


def _receive(resp: requests.Response, out: BinaryIO, digest: Any, limit: int | None,
             progress: Progress | None) -> int:
    """Copy the body to ``out`` (at most ``limit`` bytes), hashing it; the bytes copied."""
    got = 0
    for block in blocks(resp, limit):
        got += len(block)
        digest.update(block)
        out.write(block)
        if progress:
            progress(len(block))
    return got


class _ProgressReader:
    """A file wrapper that reports bytes read (requests streams it; len() sets Content-Length)."""

    def __init__(self, f: BinaryIO, size: int, progress: Progress | None) -> None:
        self.f, self.size, self.progress = f, size, progress

    def __len__(self) -> int:
        return self.size

    def read(self, n: int = -1) -> bytes:
        chunk = self.f.read(n if n and n > 0 else CHUNK)
        if self.progress and chunk:
            self.progress(len(chunk))
        return chunk


class Client:
    def __init__(self, server: str, ca: str | Path | None = None, token: str | None = None,
                 timeout: float = 60.0) -> None:
        self.server = server.rstrip("/")
        self.verify: str | bool = str(ca) if ca else True
        self.token = token
        self.timeout = timeout
        self.http = _SameOriginSession(self.server)
        # Called once on an expired/revoked token; returns a new token (workers re-login).
        self.reauth: Callable[[], str] | None = None

    # --- plumbing -----------------------------------------------------------------------

    def request(self, method: str, path: str, *, expect: Iterable[int] = (200, 201),
                **kw: Any) -> requests.Response:
        kw.setdefault("timeout", self.timeout)
        for attempt in (0, 1):
            headers = dict(kw.pop("headers", None) or {})
            if self.token:
                headers["Authorization"] = f"Bearer {self.token}"
            try:
                resp = self.http.request(method, f"{self.server}{paths.API_PREFIX}{path}",
                                         headers=headers, verify=self.verify, **kw)
            except requests.exceptions.SSLError as e:
                raise ApiError(f"TLS verification of {self.server} failed: {e}",
                               code="tls_error", status=0) from None
            except requests.exceptions.ConnectionError as e:
                raise ApiError(f"cannot reach {self.server}: {e.__class__.__name__}",
                               code="unreachable", status=0) from None
            except requests.exceptions.Timeout:
                raise ApiError(f"{self.server} did not answer in time", code="timeout",
                               status=0) from None
            if resp.status_code in expect:
                return resp
            err = ApiError.from_response(resp)
            retryable = err.code in REAUTH_CODES
            if attempt == 0 and retryable and self.reauth and "data" not in kw:
                self.token = self.reauth()
                kw["headers"] = headers
                continue
            raise err
        raise AssertionError("unreachable")

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw).json()

    def post(self, path: str, body: dict[str, Any] | None = None, **kw: Any) -> Any:
        return self.request("POST", path, json=body or {}, **kw).json()

    # --- auth, users, groups ------------------------------------------------------------

    def login(self, login: str, password: str) -> dict[str, Any]:
        answer = self.post(paths.LOGIN, {"login": login, "password": password})
        self.token = answer["token"]
        return answer

    def logout(self) -> None:
        self.post("/auth/logout")
        self.token = None

    def whoami(self) -> dict[str, Any]:
        return self.get("/auth/whoami")

    def change_password(self, old: str, new: str) -> dict[str, Any]:
        """Every token of the account is revoked; the answer carries a new one."""
        answer = self.post("/auth/password", {"old_password": old, "new_password": new})
        self.token = answer["token"]
        return answer

    def set_user_enabled(self, uid: str, enabled: bool) -> dict[str, Any]:
        return self.post(f"/users/{uid}/{'enable' if enabled else 'disable'}")

    def user_by_login(self, login: str) -> dict[str, Any]:
        for u in self.list_users():
            if u["login"] == login:
                return u
        raise XwvmError(f"no user {login!r} that you may see", code="unknown_user")

    def x509_login(self, cert_pem: bytes, sign: Callable[[bytes], bytes]) -> dict[str, Any]:
        """Log in with a certificate: ``sign`` signs the server's challenge with its key."""
        import base64
        pem = cert_pem.decode()
        challenge = self.post(paths.X509_CHALLENGE, {"certificate": pem})
        signature = sign(challenge["to_sign"].encode())
        answer = self.post(paths.X509_LOGIN, {
            "certificate": pem, "nonce": challenge["nonce"],
            "signature": base64.b64encode(signature).decode()})
        self.token = answer["token"]
        return answer

    def oidc_start(self, redirect_uri: str, code_challenge: str) -> dict[str, Any]:
        return self.post("/auth/oidc/start", {"redirect_uri": redirect_uri,
                                              "code_challenge": code_challenge})

    def oidc_finish(self, state: str, code: str, code_verifier: str) -> dict[str, Any]:
        answer = self.post("/auth/oidc/finish", {"state": state, "code": code,
                                                 "code_verifier": code_verifier})
        self.token = answer["token"]
        return answer

    def issue_cert(self, login: str, csr_pem: bytes) -> dict[str, Any]:
        return self.post("/admin/certs", {"login": login, "csr": csr_pem.decode()})

    def list_certs(self) -> list[dict[str, Any]]:
        return self.get("/admin/certs")

    def revoke_cert(self, serial: str) -> dict[str, Any]:
        return self.post(f"/admin/certs/{serial}/revoke")

    def create_user(self, login: str, password: str, rights: str,
                    group: str | None = None, public: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {"login": login, "password": password, "rights": rights,
                                "group": group}
        if public:  # a worker account that runs anyone's public jobs (super users only)
            body["public"] = True
        return self.post("/users", body)

    def list_users(self) -> list[dict[str, Any]]:
        return self.get("/users")

    def create_group(self, name: str) -> dict[str, Any]:
        return self.post("/groups", {"name": name})

    def list_groups(self) -> list[dict[str, Any]]:
        return self.get("/groups")

    def enroll_worker(self, project: str | None = None, public: bool = False) -> dict[str, Any]:
        return self.post(paths.WORKERS_ENROLL, {"project": project, "public": public})

    # --- data ---------------------------------------------------------------------------

    def upload_data(self, path: Path, name: str | None = None, access_rights: str = "755",
                    progress: Progress | None = None) -> dict[str, Any]:
        path = Path(path)
        size = path.stat().st_size
        sha = sha256_file(path)
        data = self.post("/data", {"name": name or path.name, "size": size, "sha256": sha,
                                   "access_rights": access_rights})
        self._put_file(paths.data_content(data["uid"]), path, size, sha, progress)
        return self.get(f"/data/{data['uid']}")

    def _put_file(self, route: str, path: Path, size: int, sha: str,
                  progress: Progress | None) -> Any:
        """PUT a file; a token that expired (or was revoked) meanwhile is renewed through
        ``reauth`` once and the file sent again from its start (a stream cannot be
        replayed by :meth:`request` itself)."""
        for attempt in (0, 1):
            try:
                with open(path, "rb") as f:
                    return self.request("PUT", route, data=_ProgressReader(f, size, progress),
                                        headers={"X-Content-SHA256": sha,
                                                 "Content-Type": "application/octet-stream",
                                                 "Content-Length": str(size)}).json()
            except ApiError as e:
                if attempt or e.code not in REAUTH_CODES or self.reauth is None:
                    raise
                self.token = self.reauth()
        raise AssertionError("unreachable")

    def get_range(self, route: str, start: int = 0, end: int | None = None, *,
                  sha256: str | None = None,
                  expect: Iterable[int] = (200, 206)) -> requests.Response:
        """GET ``route`` streamed, from byte ``start`` to ``end`` (inclusive; None: to its
        end). ``sha256`` is sent as If-Range: a file that changed comes whole (200)."""
        headers = {}
        if start or end is not None:
            headers["Range"] = f"bytes={start}-{'' if end is None else end}"
            if sha256:
                headers["If-Range"] = f'"{sha256}"'
        return self.request("GET", route, expect=expect, headers=headers, stream=True)

    def read_range(self, route: str, start: int, end: int) -> Iterator[bytes]:
        """Bytes ``start``..``end`` (inclusive) of ``route`` in blocks; a server that
        sends more than the range is cut off (``too_large``), one that ignores it refused
        unread."""
        with self.get_range(route, start, end) as resp:
            if resp.status_code != 206:
                raise ApiError(f"the server ignored the byte range asked of {route}",
                               code="http_error", status=resp.status_code)
            yield from blocks(resp, end - start + 1)

    def download(self, route: str, dest: Path, *, sha256: str | None = None,
                 progress: Progress | None = None, size: int | None = None) -> int:
        """Download to ``dest`` through ``dest.part``, resuming a partial file with Range,
        hashing while it writes (the file is read once). The sha256 comes from the argument
        or else the server's header; a mismatch removes the partial file and raises
        ``checksum_mismatch``. ``size``: the declared size; a server sending more is cut off
        there (``too_large``). Returns the bytes this call transferred."""
        dest = Path(dest)
        part = dest.with_name(dest.name + ".part")
        digest, have = _partial(part, size)
        resp = self.get_range(route, have, sha256=sha256, expect=(200, 206, 416))
        if resp.status_code == 416:  # the partial file is already whole (or bogus)
            resp.close()
            expected = sha256 or resp.headers.get("X-Content-SHA256")
            if expected and digest.hexdigest() == expected:
                os.replace(part, dest)
                return 0
            part.unlink()
            return self.download(route, dest, sha256=sha256, progress=progress, size=size)
        if resp.status_code == 200:
            digest, have = hashlib.sha256(), 0
        if progress and have:
            progress(have)
        try:
            with resp, open(part, "ab" if have else "wb") as out:
                got = _receive(resp, out, digest, _room(size, have), progress)
        except ApiError as e:
            if e.code == "too_large":
                part.unlink(missing_ok=True)
            raise
        expected = sha256 or resp.headers.get("X-Content-SHA256")
        if expected and digest.hexdigest() != expected:
            part.unlink()
            raise ApiError(f"downloaded file does not match sha256 {expected}; the partial "
                           "file was removed, retry", code="checksum_mismatch", status=0)
        os.replace(part, dest)
        return got

    def download_data(self, uid: str, dest: Path, **kw: Any) -> Path:
        self.download(paths.data_content(uid), dest, **kw)
        return Path(dest)

    def list_data(self) -> list[dict[str, Any]]:
        return self.get("/data")

    def get_data(self, uid: str) -> dict[str, Any]:
        return self.get(f"/data/{uid}")

    def delete_data(self, uid: str) -> None:
        self.request("DELETE", f"/data/{uid}")

    # --- apps ---------------------------------------------------------------------------

    def create_app(self, name: str, binaries: dict[str, str] | None = None,
                   kind: str = "native", access_rights: str = "755") -> dict[str, Any]:
        return self.post("/apps", {"name": name, "kind": kind, "binaries": binaries or {},
                                   "access_rights": access_rights})

    def sign_app(self, ref: str, public_key: str, signature: str) -> dict[str, Any]:
        return self.post(f"/apps/{ref}/signatures",
                         {"public_key": public_key, "signature": signature})

    def list_apps(self) -> list[dict[str, Any]]:
        return self.get("/apps")

    def get_app(self, ref: str) -> dict[str, Any]:
        return self.get(f"/apps/{ref}")

    def delete_app(self, ref: str) -> None:
        self.request("DELETE", f"/apps/{ref}")

    # --- contexts -----------------------------------------------------------------------

    def create_context(self, name: str, document: dict[str, Any],
                       access_rights: str = "700") -> dict[str, Any]:
        return self.post("/contexts", {"name": name, "document": document,
                                       "access_rights": access_rights})

    def list_contexts(self) -> list[dict[str, Any]]:
        return self.get("/contexts")

    def get_context(self, uid: str) -> dict[str, Any]:
        return self.get(f"/contexts/{uid}")

    def delete_context(self, uid: str) -> None:
        self.request("DELETE", f"/contexts/{uid}")

    # --- works --------------------------------------------------------------------------

    def submit(self, app: str | None = None, **spec: Any) -> dict[str, Any]:
        """A native job of ``app``, or a VM job with ``template=...`` and ``command=...``."""
        body = {"app": app, **spec}
        return self.post("/works", {k: v for k, v in body.items() if v is not None})

    def list_works(self, uids: list[str] | None = None,
                   status: str | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"status": status} if status else {}
        if not uids:
            return self.get("/works", params=params)
        rows: list[dict[str, Any]] = []
        for i in range(0, len(uids), UIDS_PER_QUERY):  # URLs have a length limit
            rows += self.get("/works", params={**params, "uid": uids[i:i + UIDS_PER_QUERY]})
        return rows

    def get_work(self, uid: str) -> dict[str, Any]:
        return self.get(paths.work(uid))

    def why(self, uid: str) -> dict[str, Any]:
        """Why a job waits: ``hosts`` considered, ``matching`` (those that can run it now),
        ``conditions`` [{name, asks, failing}] and a one-line ``summary``."""
        return self.get(f"{paths.work(uid)}/why")

    def work_action(self, uid: str, action: str) -> dict[str, Any]:
        return self.post(f"/works/{uid}/{action}")

    def delete_work(self, uid: str) -> None:
        self.request("DELETE", f"/works/{uid}")

    def wait(self, uids: list[str], timeout: float | None = None,
             poll: float = 0.5) -> list[dict[str, Any]]:
        """Until every job in ``uids`` is final (their rows), or ``timeout``. A server that
        does not answer or answers "retry later" (5xx, 408, 429: restarting, its database
        restarting) is waited out like a job that is not done yet."""
        deadline = time.monotonic() + timeout if timeout else None
        delay = poll
        while True:
            works: list[dict[str, Any]] | None = None
            try:
                works = self.list_works(uids)
            except ApiError as e:
                status = status_of(e)
                if status is None or not (status == 0 or status >= 500 or status in (408, 429)):
                    raise
            if works is not None and len(works) == len(uids) and \
                    all(w["status"] in TERMINAL_STATUSES for w in works):
                return works
            if deadline and time.monotonic() > deadline:
                raise ApiError(f"timed out after {timeout} s waiting for {len(uids)} job(s)",
                               code="wait_timeout", status=0)
            time.sleep(delay)
            delay = min(delay * 1.5, 5.0)

    def download_result(self, uid: str, dest: Path, **kw: Any) -> Path:
        self.download(paths.work_result(uid), dest, **kw)
        return Path(dest)

    def chmod(self, uid: str, mode: str) -> dict[str, Any]:
        return self.post(f"/objects/{uid}/chmod", {"mode": mode})

    def list_hosts(self) -> list[dict[str, Any]]:
        return self.get("/hosts")

    def events(self, obj: str | None = None, since: int = 0) -> list[dict[str, Any]]:
        """All events after ``since`` (fetched page by page)."""
        rows: list[dict[str, Any]] = []
        while True:
            params: dict[str, Any] = {"since": since, "limit": EVENT_PAGE}
            if obj:
                params["object"] = obj
            page = self.get("/events", params=params)
            rows += page
            if len(page) < EVENT_PAGE:
                return rows
            since = page[-1]["id"]

    # --- resumable uploads and templates ------------------------------------------------

    def create_upload(self, size: int, sha256: str) -> dict[str, Any]:
        return self.post("/uploads", {"size": size, "sha256": sha256})

    def get_upload(self, uid: str) -> dict[str, Any]:
        return self.get(f"/uploads/{uid}")

    def upload_file(self, path: Path, *, sha256: str | None = None, resume: str | None = None,
                    chunk_size: int = UPLOAD_CHUNK, progress: Progress | None = None,
                    on_session: Callable[[str], None] | None = None) -> dict[str, Any]:
        """Upload ``path`` through a resumable session (``resume``: an earlier session's id,
        continued from the server's offset) and complete it; the completed session."""
        path = Path(path)
        size = path.stat().st_size
        sha = sha256 or sha256_file(path)
        up = None
        if resume:
            try:
                up = self.get_upload(resume)
            except ApiError as e:
                if e.status not in (403, 404):
                    raise
            if up is not None and (up["sha256"] != sha or up["size"] != size):
                up = None
        if up is None:
            up = self.create_upload(size, sha)
        if on_session:
            on_session(up["uid"])
        offset = up["received"]
        if progress and offset:
            progress(offset)
        with open(path, "rb") as f:
            while up["status"] == "open" and offset < size:
                f.seek(offset)
                body = f.read(min(chunk_size, size - offset))
                try:
                    up = self.request("PUT", f"/uploads/{up['uid']}", data=body, headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Range": f"bytes {offset}-{offset + len(body) - 1}/{size}"}
                        ).json()
                except ApiError as e:
                    if e.code != "offset_mismatch" or not isinstance(e.details, dict):
                        raise
                    offset = e.details["offset"]  # another attempt got there first: follow
                    continue
                offset = up["received"]
                if progress:
                    progress(len(body))
        if up["status"] == "open":
            up = self.post(f"/uploads/{up['uid']}/complete")
        return up

    def create_template(self, fields: dict[str, Any]) -> dict[str, Any]:
        return self.post("/templates", fields)

    def list_templates(self, name: str | None = None,
                       status: str | None = None) -> list[dict[str, Any]]:
        params = {k: v for k, v in (("name", name), ("status", status)) if v}
        return self.get("/templates", params=params)

    def get_template(self, ref: str) -> dict[str, Any]:
        return self.get(f"/templates/{ref}")

    def template_chunks(self, ref: str, role: str, fmt: str | None = None) -> dict[str, Any]:
        return self.get(paths.template_chunks(ref, role), params={"format": fmt} if fmt else None)

    def sign_template(self, ref: str, public_key: str, signature: str) -> dict[str, Any]:
        return self.post(f"/templates/{ref}/signatures", {"public_key": public_key,
                                                           "signature": signature})

    def publish_template(self, ref: str) -> dict[str, Any]:
        return self.post(f"/templates/{ref}/publish")

    def deprecate_template(self, ref: str) -> dict[str, Any]:
        return self.post(f"/templates/{ref}/deprecate")

    def delete_template(self, ref: str) -> None:
        self.request("DELETE", f"/templates/{ref}")

    # --- the worker's side --------------------------------------------------------------

    def register_host(self, facts: dict[str, Any]) -> dict[str, Any]:
        return self.post(paths.HOSTS, facts)

    def heartbeat(self, host: str, running: list[str],
                  templates_held: list[str] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"running": running}
        if templates_held is not None:
            body["templates_held"] = templates_held
        return self.post(paths.host_heartbeat(host), body)

    def request_work(self, host: str) -> dict[str, Any]:
        return self.post(paths.host_work(host))

    def upload_result(self, uid: str, path: Path) -> dict[str, Any]:
        path = Path(path)
        return self._put_file(paths.work_result(uid), path, path.stat().st_size,
                              sha256_file(path), None)

    def report(self, uid: str, status: JobStatus, exit_code: int | None = None,
               message: str | None = None, fault: Fault | None = None) -> dict[str, Any]:
        """Report a job this worker holds; a job given back (PENDING) names its fault."""
        return self.post(paths.work_report(uid),
                         Report(JobStatus(status), exit_code, message, fault).to_json())

    # --- the nested worker's side (a VM job's delegated token) ----------------------------

    def progress(self, uid: str, phase: str = "running") -> dict[str, Any]:
        """A sign of life of job ``uid``'s payload; the answer's ``stop`` says to end it."""
        return self.post(paths.work_progress(uid), {"phase": phase})

    def pilot_work(self, pilot_uid: str) -> JobDescription | None:
        """The next job for pilot ``pilot_uid`` (its description), or None when none waits."""
        return WorkAnswer.from_json(self.post(paths.pilot_work(pilot_uid))).work


    # --- objects' lifecycle: removal, a host's goodbye, an app's new binaries ---------------

    def delete_host(self, ref: str) -> dict[str, Any]:
        """Remove a host (id or name): its running jobs are lost, it is "gone"."""
        return self.request("DELETE", f"/hosts/{ref}").json()

    def goodbye(self, host: str) -> dict[str, Any]:
        """The worker stops cleanly: its host is "stopped", not lost."""
        return self.post(f"/hosts/{host}/goodbye")

    def delete_user(self, ref: str) -> dict[str, Any]:
        """Remove an account (login or id); refused while it owns unfinished jobs."""
        return self.request("DELETE", f"/users/{ref}").json()

    def delete_group(self, name: str) -> dict[str, Any]:
        """Remove a usergroup; refused while accounts belong to it."""
        return self.request("DELETE", f"/groups/{name}").json()

    def update_app_binaries(self, ref: str, binaries: dict[str, str] | None = None,
                            remove: list[str] | None = None) -> dict[str, Any]:
        """Add or replace binaries (``{"os/arch": DATA_UID}``) or remove platforms: the
        app's next version, unsigned until signed anew."""
        return self.post(f"/apps/{ref}/binaries",
                         {"binaries": binaries or {}, "remove": remove or []})

def status_of(e: Exception) -> int | None:
    """For :func:`xwvm.protocol.retry.retrying`: an ApiError's HTTP status, 0 when no
    answer came (unreachable, timed out); None for anything else (never retried)."""
    if not isinstance(e, ApiError):
        return None
    if e.status:
        return e.status
    return 0 if e.code in NO_ANSWER else None
