"""A malicious server against a real worker: off-origin redirects, oversized and endless
downloads, huge chunk sizes, planted cache entries, traversal ids and names, zero periods.

The attacker here is the server, so the server is a small fake one (TLS on loopback, a CA
made in the test) that answers what an attacker would; the worker, its caches and its
HTTP client are the real ones (the pull loop runs as a real ``xwvm worker run`` process).
A second loopback address (127.0.0.2) stands in for a device on the volunteer's LAN.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.support.lan import free_port
from tests.support.processes import XWVM
from xwvm import signing
from xwvm.client.sdk import Client
from xwvm.protocol.messages import InputFile, TemplateDescription
from xwvm.protocol.paths import template_artifact
from xwvm.server import pki
from xwvm.worker.cache import DataCache
from xwvm.worker.credential import Credential
from xwvm.worker.images import ImageCache, ImageError

MiB = 1 << 20
HOST = "0b2f3c4d-5e6f-4a1b-8c2d-3e4f5a6b7c8d"
JOB = "1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
DATA = "2d3e4f5a-6b7c-4d8e-9f0a-1b2c3d4e5f6a"
TPL = "3e4f5a6b-7c8d-4e9f-8a1b-2c3d4e5f6a7b"
SECRET = b"router admin page: wifi password hunter2"

Reply = tuple[int, dict[str, str], bytes | Iterable[bytes]]
Route = Callable[["_Handler", re.Match[str]], Reply]


def _json(doc: Any, status: int = 200) -> Reply:
    return status, {"Content-Type": "application/json"}, json.dumps(doc).encode()


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(length) if length else b""
        fake = self.server.fake
        with fake.lock:
            fake.seen.append((self.command, self.path, time.monotonic()))
        for (method, pattern), route in fake.routes.items():
            m = re.fullmatch(pattern, self.path.split("?")[0])
            if method == self.command and m:
                status, headers, body = route(self, m)
                break
        else:
            status, headers, body = _json({"error": "not_found", "message": "no"}, 404)
        self.send_response(status)
        chunks = [body] if isinstance(body, bytes) else body
        if isinstance(body, bytes):
            headers = {"Content-Length": str(len(body)), **headers}
        else:
            headers = {"Transfer-Encoding": "chunked", **headers}
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        try:
            for chunk in chunks:
                if "Transfer-Encoding" in headers:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                else:
                    self.wfile.write(chunk)
                with fake.lock:
                    fake.sent += len(chunk)
            if "Transfer-Encoding" in headers:
                self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True

    do_GET = do_POST = do_PUT = _serve


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeServer


class FakeServer:
    """An xwvm API as a hostile operator would run it: every answer is the test's."""

    def __init__(self, tmp: Path) -> None:
        import ssl
        tls = tmp / "tls"
        tls.mkdir()
        ca, ca_key = pki.make_ca(tls, "hostile")
        pki.issue_server_cert(tls, ca, ca_key, ["127.0.0.1"])
        self.ca = tls / "ca.pem"
        self.lock = threading.Lock()
        self.seen: list[tuple[str, str, float]] = []
        self.reports: list[dict[str, Any]] = []
        self.sent = 0
        self.jobs: list[dict[str, Any]] = []
        self.idle: dict[str, Any] = {"retry_after": 1}
        self.routes: dict[tuple[str, str], Route] = {
            ("POST", "/api/v1/auth/login"): lambda h, m: _json({"token": "tok"}),
            ("POST", "/api/v1/hosts"): lambda h, m: _json({"uid": HOST}),
            ("POST", f"/api/v1/hosts/{HOST}/heartbeat"):
                lambda h, m: _json({"alive_period": 60, "stop": []}),
            ("POST", f"/api/v1/hosts/{HOST}/work"): self._work,
            ("POST", r"/api/v1/works/(.+)/report"): self._report,
        }
        self.httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.fake = self
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(tls / "server.pem", tls / "server-key.pem")
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def _work(self, h: _Handler, m: re.Match[str]) -> Reply:
        with self.lock:
            if self.jobs:
                return _json({"work": self.jobs.pop(0), "alive_period": 60})
        return _json(self.idle)

    def _report(self, h: _Handler, m: re.Match[str]) -> Reply:
        with self.lock:
            self.reports.append({"uid": m.group(1), **json.loads(h.body)})
        return _json({"uid": m.group(1)})

    def count(self, method: str, path: str, since: float = 0.0) -> int:
        with self.lock:
            return sum(1 for mth, p, t in self.seen if mth == method and path in p
                       and t >= since)

    def client(self) -> Client:
        return Client(self.url, self.ca, "tok")

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeServer]:
    server = FakeServer(tmp_path)
    yield server
    server.close()


def _native_job(uid: str = JOB, files: list[dict[str, Any]] | None = None,
                **extra: Any) -> dict[str, Any]:
    return {"uid": uid, "app": "tool", "args": [], "env": {},
            "files": files or [], "wall_clock_s": 30, "min_memory_mb": None,
            "min_cpus": None, "min_disk_mb": None, "listen_port": None, **extra}


def _file(name: str, content: bytes, role: str = "input", **extra: Any) -> dict[str, Any]:
    return {"role": role, "name": name, "data": DATA,
            "sha256": hashlib.sha256(content).hexdigest(), "size": len(content), **extra}


def _worker(fake: FakeServer, work_dir: Path, *args: str) -> subprocess.Popen[str]:
    cred = work_dir.parent / "worker.cred"
    Credential(server=fake.url, login="w", password="pw",
               ca_pem=fake.ca.read_text()).save(cred)
    return subprocess.Popen([*XWVM, "worker", "run", "--credential", str(cred), "--work-dir",
                             str(work_dir), "--hypervisor", "none", "--name", "victim-pc",
                             # The attacks here are on the downloads, which a worker reaches
                             # for an app a trusted key signed (test_signed_apps.py): the
                             # owner's opt-out stands in for that signature.
                             "--allow-unsigned-apps", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _finish(proc: subprocess.Popen[str], timeout: float = 60) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"the worker did not stop:\n{out}") from None
    return out


# --- hole 5: redirects off the server's origin --------------------------------------------

class _Lan(BaseHTTPRequestHandler):
    """The volunteer's router: answers 401 with its secret page, and remembers callers."""

    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        type(self).hits.append(self.path)
        self.send_response(401)
        self.send_header("Content-Length", str(len(SECRET)))
        self.end_headers()
        self.wfile.write(SECRET)

    def log_message(self, *args: Any) -> None:
        pass


def test_redirect_to_the_lan_is_not_followed_nor_reported(fake: FakeServer,
                                                          tmp_path: Path) -> None:
    lan = ThreadingHTTPServer(("127.0.0.2", free_port()), _Lan)
    threading.Thread(target=lan.serve_forever, daemon=True).start()
    _Lan.hits = []
    router = f"http://127.0.0.2:{lan.server_address[1]}/admin"
    fake.routes[("GET", f"/api/v1/data/{DATA}/content")] = \
        lambda h, m: (302, {"Location": router, "Content-Length": "0"}, b"")
    fake.jobs.append(_native_job(files=[_file("in.txt", b"input")]))
    try:
        out = _finish(_worker(fake, tmp_path / "w", "--max-jobs", "1"))
    finally:
        lan.shutdown()
        lan.server_close()
    assert _Lan.hits == [], "the worker connected to the LAN device"
    assert len(fake.reports) == 1, out
    report = json.dumps(fake.reports)
    assert "hunter2" not in report and "router" not in report
    assert fake.reports[0]["status"] == "ERROR"
    assert "redirected" in fake.reports[0]["message"] and "another origin" in report


def test_a_foreign_error_body_is_not_reported(fake: FakeServer, tmp_path: Path) -> None:
    """Even from the server's own origin, a non-API body (here: the secret a proxy or a
    misbehaving server might return) is named by status and path, not quoted."""
    fake.routes[("GET", f"/api/v1/data/{DATA}/content")] = \
        lambda h, m: (401, {"Content-Type": "text/html"}, SECRET)
    fake.jobs.append(_native_job(files=[_file("in.txt", b"input")]))
    out = _finish(_worker(fake, tmp_path / "w", "--max-jobs", "1"))
    assert len(fake.reports) == 1, out
    message = fake.reports[0]["message"]
    assert "hunter2" not in message
    assert "401" in message and f"/api/v1/data/{DATA}/content" in message


# --- hole 11: ids that become paths; periods of zero --------------------------------------

def test_job_uid_with_traversal_is_refused_and_the_victim_is_intact(fake: FakeServer,
                                                                    tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    (victim / "photos").mkdir(parents=True)
    (victim / "photos" / "kid.jpg").write_bytes(b"precious")
    fake.jobs.append(_native_job(uid="../../victim"))
    cache = tmp_path / "w" / "cache"
    cache.mkdir(parents=True)
    stale = cache / f"{'a' * 64}.download.part"  # a previous run's partial download
    stale.write_bytes(b"x" * 1000)
    proc = _worker(fake, tmp_path / "w", "--max-idle", "3")
    out = _finish(proc)
    assert (victim / "photos" / "kid.jpg").read_bytes() == b"precious", out
    assert fake.reports == []  # nothing to report to: the id is the report's URL
    assert "job id that is not a uid" in out
    assert not stale.exists(), "partial downloads are removed at start"


def test_input_name_with_traversal_is_refused(fake: FakeServer, tmp_path: Path) -> None:
    content = b"not a template at all"
    sha = hashlib.sha256(content).hexdigest()
    fake.routes[("GET", f"/api/v1/data/{DATA}/content")] = \
        lambda h, m: (200, {}, content)
    outside = tmp_path / "outside"
    for name in (f"../../../images/blobs/{sha}", "a/../../x", str(outside), "x\0y", ""):
        fake.jobs.append(_native_job(uid=JOB, files=[_file(name, content)]))
    work = tmp_path / "w"
    out = _finish(_worker(fake, work, "--max-jobs", "5"))
    assert not (work / "images").exists() and not (work / "jobs" / "images").exists(), out
    assert not outside.exists()
    assert [r["status"] for r in fake.reports] == ["ERROR"] * 5, out
    for r in fake.reports:
        assert "not a relative path" in r["message"] or "plain file name" in r["message"]
        assert "images/blobs" not in r["message"]


def test_an_input_never_replaces_another_file_of_the_job(fake: FakeServer,
                                                         tmp_path: Path) -> None:
    """Found by review: an input named like the app, placed after it, replaced the program
    file; an input named like the job's /tmp folder clashed with it."""
    content = b"#!/bin/sh\necho replaced\n"
    fake.routes[("GET", f"/api/v1/data/{DATA}/content")] = \
        lambda h, m: (200, {}, content)
    fake.jobs.append(_native_job(files=[_file("same.txt", content),
                                        _file("same.txt", content)]))
    fake.jobs.append(_native_job(files=[_file(".tmp/x", content)]))
    out = _finish(_worker(fake, tmp_path / "w", "--max-jobs", "2"))
    assert [r["status"] for r in fake.reports] == ["ERROR"] * 2, out
    for r in fake.reports:
        assert "same name" in r["message"], r["message"]


def test_zero_periods_do_not_make_the_worker_spin(fake: FakeServer, tmp_path: Path) -> None:
    fake.idle = {"retry_after": 0}
    proc = _worker(fake, tmp_path / "w", "--max-idle", "4")
    started = time.monotonic()
    out = _finish(proc)
    idle_asks = fake.count("POST", "/work")
    assert idle_asks <= 4 / 0.5 + 2, (idle_asks, out)  # at least 1 s, jittered to 0.5

    # A job whose heartbeat the server sets to 0 (and a download it stalls for 4 s).
    def stalled(h: _Handler, m: re.Match[str]) -> Reply:
        time.sleep(4)
        return _json({"error": "gone", "message": "no such data"}, 404)

    fake.routes[("GET", f"/api/v1/data/{DATA}/content")] = stalled
    fake.routes[("POST", f"/api/v1/hosts/{HOST}/heartbeat")] = \
        lambda h, m: _json({"alive_period": 0, "stop": []})
    fake.jobs.append({**_native_job(files=[_file("in.txt", b"x")])})
    fake.idle = {"retry_after": 1}
    work_answer = fake._work

    def zero_alive(h: _Handler, m: re.Match[str]) -> Reply:
        status, headers, body = work_answer(h, m)
        doc = json.loads(body)  # type: ignore[arg-type]
        if "work" in doc:
            doc["alive_period"] = 0
        return _json(doc, status)

    fake.routes[("POST", f"/api/v1/hosts/{HOST}/work")] = zero_alive
    started = time.monotonic()
    out = _finish(_worker(fake, tmp_path / "w2", "--max-jobs", "1"))
    beats = fake.count("POST", "/heartbeat", since=started)
    assert beats <= 4 / 1.0 + 2, (beats, out)
    assert fake.reports and fake.reports[0]["status"] == "ERROR", out


# --- holes 7, 8 and 11 in the template image cache ----------------------------------------

class _Template:
    """A signed template served by the fake server (a trusted key signed it: the server
    is what went bad, not the signer)."""

    def __init__(self, fake: FakeServer, disk: bytes, uid: str = TPL,
                 version: str = "1", chunks: dict[str, Any] | None = None,
                 serve: Callable[[], Iterable[bytes]] | None = None) -> None:
        key = Ed25519PrivateKey.generate()
        self.trusted = {signing.key_id(key.public_key()): key.public_key()}
        self.disk = disk
        art = {"role": "disk", "format": "raw", "size": len(disk),
               "sha256": hashlib.sha256(disk).hexdigest(),
               "path": template_artifact(uid, "disk", "raw")}
        if chunks is not None:
            art["chunk_count"] = len(chunks["chunks"])
        desc: dict[str, Any] = {"uid": uid, "name": "hostile", "version": version,
                                "os": "linux", "arch": "x86_64", "cmdline": "",
                                "min_memory_mb": 256, "min_cpus": 1, "shared_apps": [],
                                "status": "published", "artifacts": [art]}
        desc["manifest"] = signing.canonical_manifest(desc)
        desc["signatures"] = [signing.sign(desc["manifest"], key).to_dict()]
        self.desc = TemplateDescription.from_json(desc)
        base = r"/.*/artifacts/disk"  # whatever the uid makes of the path
        fake.routes[("GET", base)] = lambda h, m: (200, {}, serve() if serve else disk)
        if chunks is not None:
            fake.routes[("GET", base + "/chunks")] = lambda h, m: _json(chunks)


def test_template_uid_with_a_slash_is_refused(fake: FakeServer, tmp_path: Path) -> None:
    cache_root = tmp_path / "w" / "images"
    t = _Template(fake, b"d" * 4096, uid="../../../victim")
    cache = ImageCache(cache_root, 64 * MiB, t.trusted)
    with pytest.raises(ImageError) as e, cache.use(fake.client(), t.desc):
        pass
    assert "template id that is not a uid" in e.value.message
    assert not list(tmp_path.rglob("victim*"))


def test_artifact_longer_than_signed_is_cut_at_its_size(fake: FakeServer,
                                                        tmp_path: Path) -> None:
    def endless() -> Iterator[bytes]:
        block = b"\x00" * MiB
        for _ in range(64):
            yield block

    t = _Template(fake, b"\x00" * MiB, serve=endless)
    t.disk = b""
    cache = ImageCache(tmp_path / "images", 256 * MiB, t.trusted)
    with pytest.raises(ImageError) as e, cache.use(fake.client(), t.desc):
        pass
    assert e.value.code == "too_large", e.value.message
    assert list((tmp_path / "images" / "blobs").iterdir()) == []  # the partial is gone
    assert fake.sent < 16 * MiB, fake.sent  # the worker hung up (socket buffers aside)


def test_partial_downloads_count_against_the_image_quota(fake: FakeServer,
                                                         tmp_path: Path) -> None:
    t = _Template(fake, os.urandom(2 * MiB))
    cache = ImageCache(tmp_path / "images", 3 * MiB, t.trusted)
    stale = cache.blob("b" * 64).with_name("b" * 64 + ".part")
    stale.write_bytes(b"\x00" * (2 * MiB))  # left by a download that never finished
    assert cache.size() == 2 * MiB
    with cache.use(fake.client(), t.desc) as paths:
        assert paths["disk"].read_bytes() == t.disk
    assert not stale.exists() and cache.size() <= cache.quota


def test_planted_blob_is_never_booted(fake: FakeServer, tmp_path: Path) -> None:
    t = _Template(fake, os.urandom(MiB))
    root = tmp_path / "images"
    with ImageCache(root, 64 * MiB, t.trusted).use(fake.client(), t.desc):
        pass
    blob = root / "blobs" / t.desc.artifacts[0].sha256
    for cache in (ImageCache(root, 64 * MiB, t.trusted), ImageCache(root, 64 * MiB,
                                                                     t.trusted)):
        with cache.use(fake.client(), t.desc):
            pass  # verified (hashed) on first use in this "process"
        blob.chmod(0o644)  # a payload or a traversal name rewrites it...
        blob.write_bytes(b"#!unsigned bootkit" + b"\x00" * 100)
        os.utime(blob, (1, 1))  # ...and even puts its mtime back
        with cache.use(fake.client(), t.desc) as paths:
            assert paths["disk"].read_bytes() == t.disk
        assert [x.mode for x in cache.transfers] == ["hit", "full"]


# The child that updates a template through ImageCache and reports its peak RSS.
_PEAK_RSS_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    from pathlib import Path
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from xwvm import signing
    from xwvm.client.sdk import Client
    from xwvm.protocol.messages import TemplateDescription
    from xwvm.worker.images import ImageCache, ImageError
    args = json.loads(sys.argv[1])
    keys = {k: Ed25519PublicKey.from_public_bytes(signing.unb64(v, "key"))
            for k, v in args["keys"].items()}
    cache = ImageCache(Path(args["root"]), 1 << 40, keys)
    client = Client(args["url"], args["ca"], "tok")
    with cache.use(client, TemplateDescription.from_json(args["base"])):
        pass
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        with cache.use(client, TemplateDescription.from_json(args["new"])):
            pass
        outcome = "ok"
    except ImageError as e:
        outcome = e.code
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"before_kib": before, "peak_kib": peak, "outcome": outcome}))
""")


def test_server_chosen_chunk_size_keeps_memory_bounded(fake: FakeServer,
                                                       tmp_path: Path) -> None:
    """An incremental update whose chunk manifest says 256 MiB chunks: the worker must
    not hold a chunk that size in memory (its peak RSS is measured in a child process)."""
    size, cs = 200 * MiB, 256 * MiB
    block = os.urandom(MiB)
    base_tpl = _Template(fake, block, version="1", uid=TPL,
                         chunks={"chunk_size": cs, "chunks": ["f" * 64]})
    key_doc = {k: signing.b64(signing.raw_public(v)) for k, v in base_tpl.trusted.items()}
    base_desc = base_tpl.desc.to_json()
    new, key = _signed_update(base_desc, block, size)
    key_doc[signing.key_id(key.public_key())] = signing.b64(signing.raw_public(
        key.public_key()))
    _serve_a_huge_chunked_update(fake, block, size, cs)
    proc = subprocess.run([sys.executable, "-c", _PEAK_RSS_SCRIPT, json.dumps({
        "keys": key_doc, "root": str(tmp_path / "images"), "url": fake.url,
        "ca": str(fake.ca), "base": base_desc, "new": new})],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    grew_mib = (got["peak_kib"] - got["before_kib"]) / 1024
    print(f"peak RSS growth during the update: {grew_mib:.0f} MiB ({got})")
    assert grew_mib < 64, got


def _signed_update(base_desc: dict[str, Any], block: bytes, size: int
                   ) -> tuple[dict[str, Any], Ed25519PrivateKey]:
    """Version 2 of the base template: one raw disk of ``size`` bytes (``block`` repeated)
    in two chunks, signed by a new key; (its description, the key)."""
    digest = hashlib.sha256()
    for _ in range(size // MiB):
        digest.update(block)
    key = Ed25519PrivateKey.generate()
    new_uid = "4f5a6b7c-8d9e-4f0a-9b1c-2d3e4f5a6b7c"
    new = {**base_desc, "uid": new_uid, "version": "2",
           "artifacts": [{"role": "disk", "format": "raw", "size": size,
                          "sha256": digest.hexdigest(), "chunk_count": 2,
                          "path": template_artifact(new_uid, "disk", "raw")}]}
    new["manifest"] = signing.canonical_manifest(new)
    new["signatures"] = [signing.sign(new["manifest"], key).to_dict()]
    return new, key


def _serve_a_huge_chunked_update(fake: FakeServer, block: bytes, size: int, cs: int) -> None:
    """The fake serves the base template's disk (one block) and the update's disk
    (``size`` bytes, streamed), each with a chunk manifest of ``cs``-byte chunks."""
    def stream() -> Iterator[bytes]:
        for _ in range(size // MiB):
            yield block

    manifest_chunks = {"chunk_size": cs, "chunks": ["e" * 64, "f" * 64]}
    routes = fake.routes
    base = r"/api/v1/templates/[^/]+/artifacts/disk"
    routes[("GET", base)] = lambda h, m: (
        (206 if h.headers.get("Range") else 200, {}, stream()) if TPL not in h.path
        else (200, {}, block))

    def chunk_doc(h: _Handler, m: re.Match[str]) -> Reply:
        return _json(manifest_chunks if TPL not in h.path else
                     {"chunk_size": cs, "chunks": ["f" * 64]})

    routes[("GET", base + "/chunks")] = chunk_doc


# --- hole 7 in the data cache -------------------------------------------------------------

def test_data_downloads_stop_at_the_declared_size_and_the_cache_has_a_quota(
        fake: FakeServer, tmp_path: Path) -> None:
    files = {f"{i}": os.urandom(MiB) for i in range(4)}
    by_uid = {}
    for i, content in files.items():
        uid = f"{DATA[:-1]}{i}"
        by_uid[uid] = content

    def serve(h: _Handler, m: re.Match[str]) -> Reply:
        return 200, {}, by_uid[m.group(1)]

    fake.routes[("GET", r"/api/v1/data/([^/]+)/content")] = serve
    cache = DataCache(tmp_path / "cache", quota_bytes=3 * MiB)
    client = fake.client()
    for uid, content in by_uid.items():
        f = InputFile("input", "x", uid, hashlib.sha256(content).hexdigest(), len(content))
        assert cache.job_file(client, f).read_bytes() == content
        time.sleep(0.02)  # distinct mtimes for the LRU order
        assert cache.size() <= 3 * MiB
    first = hashlib.sha256(files["0"]).hexdigest()
    assert not cache.path(first).exists()  # the least recently used went first

    # an input declared as 1 KiB that the server streams endlessly
    def endless(h: _Handler, m: re.Match[str]) -> Reply:
        return 200, {}, (b"\x00" * MiB for _ in range(64))

    fake.routes[("GET", r"/api/v1/data/([^/]+)/content")] = endless
    fake.sent = 0
    f = InputFile("input", "x", DATA, "c" * 64, 1024)
    with pytest.raises(Exception) as e:
        cache.job_file(client, f)
    assert getattr(e.value, "code", "") == "too_large", e.value
    assert not [p for p in cache.root.iterdir() if "download" in p.name]
    assert fake.sent < 16 * MiB
    too_big = dataclasses.replace(f, size=4 * MiB)
    with pytest.raises(Exception) as e:
        cache.job_file(client, too_big)
    assert getattr(e.value, "code", "") == "cache_full"


@pytest.mark.parametrize("answer", [{}, {"uid": "../../etc"}, ["uid"]])
def test_a_registration_answer_without_a_uid_is_refused(fake: FakeServer, tmp_path: Path,
                                                        answer: Any) -> None:
    """The host id the server gives names the worker's state: it must be a uid."""
    fake.routes[("POST", "/api/v1/hosts")] = lambda h, m: _json(answer)
    out = _finish(_worker(fake, tmp_path / "w", "--max-jobs", "1"))
    assert "host id that is not a uid" in out, out
    assert not fake.count("POST", "/work"), out
    assert not (tmp_path / "w" / "host.json").exists()
