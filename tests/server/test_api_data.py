"""Data uploads and downloads through the real HTTPS API: verified, atomic uploads that lose
nothing when refused or cut short; downloads with ETag, Range and resumption."""

from __future__ import annotations

import hashlib
import socket
import ssl
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from tests.support.processes import ServerProcess
from xwvm.client.sdk import ApiError, Client


def _sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _content(size: int) -> bytes:
    """Unique content (so that no other test's blob has the same digest)."""
    seed = uuid.uuid4().bytes
    out = bytearray()
    while len(out) < size:
        seed = hashlib.sha256(seed).digest()
        out += seed
    return bytes(out[:size])


def _call(server: ServerProcess, method: str, path: str, token: str | None,
          headers: dict[str, str] | None = None, **kw: Any) -> requests.Response:
    h = dict(headers or {})
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    return requests.request(method, f"{server.url}/api/v1{path}", headers=h,
                            verify=str(server.ca), timeout=30, **kw)


def _error(resp: requests.Response, status: int, code: str, *words: str) -> dict[str, Any]:
    assert resp.status_code == status, (resp.status_code, resp.text)
    body = resp.json()
    assert body["error"] == code, body
    for word in words:
        assert word in body["message"], (word, body)
    return body


def _blob(server: ServerProcess, sha: str) -> Path:
    return server.data_dir / "blobs" / sha[:2] / sha[2:4] / sha


def _tmp_files(server: ServerProcess) -> list[Path]:
    return list((server.data_dir / "blobs" / "tmp").iterdir())


def _wait_tmp_empty(server: ServerProcess, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while _tmp_files(server) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _tmp_files(server) == []


def _new_data(admin: Client, name: str = "d.bin", **kw: Any) -> dict[str, Any]:
    return admin.post("/data", {"name": name, **kw})


def _put(server: ServerProcess, admin: Client, uid: str, content: bytes,
         headers: dict[str, str] | None = None) -> requests.Response:
    return _call(server, "PUT", f"/data/{uid}/content", admin.token, headers=headers,
                 data=content)


def _upload(server: ServerProcess, admin: Client, content: bytes, **kw: Any) -> dict[str, Any]:
    d = _new_data(admin, size=len(content), sha256=_sha(content), **kw)
    resp = _put(server, admin, d["uid"], content)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _assert_pending_and_unstored(server: ServerProcess, admin: Client, uid: str,
                                 content: bytes) -> None:
    """The refused upload left the data object pending and no blob behind."""
    d = admin.get_data(uid)
    assert d["status"] == "pending", d
    assert not _blob(server, _sha(content)).exists()
    _wait_tmp_empty(server)
    resp = _call(server, "GET", f"/data/{uid}/content", admin.token)
    _error(resp, 409, "data_pending", uid)


@pytest.fixture(scope="module")
def admin(shared_server: ServerProcess) -> Client:
    return shared_server.client()


@pytest.fixture
def stored(shared_server: ServerProcess, admin: Client) -> Iterator[tuple[dict[str, Any], bytes]]:
    content = _content(1000)
    yield _upload(shared_server, admin, content, name="stored.bin"), content


# --- uploads -----------------------------------------------------------------------------


def _tls_socket(server: ServerProcess) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=str(server.ca))
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    return ctx.wrap_socket(raw, server_hostname="127.0.0.1")


@pytest.mark.parametrize("sent", [0, 1, 500, 999])
def test_truncated_upload_stores_nothing(shared_server: ServerProcess, admin: Client,
                                         sent: int) -> None:
    content = _content(1000)
    d = _new_data(admin)
    sock = _tls_socket(shared_server)
    head = (f"PUT /api/v1/data/{d['uid']}/content HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{shared_server.port}\r\n"
            f"Authorization: Bearer {admin.token}\r\n"
            "Content-Type: application/octet-stream\r\n"
            f"X-Content-SHA256: {_sha(content)}\r\n"
            "Content-Length: 1000\r\n\r\n").encode()
    sock.sendall(head + content[:sent])
    time.sleep(0.2)
    sock.close()
    # The server notices the end of the stream; the object stays pending, nothing is kept.
    _wait_tmp_empty(shared_server)
    _assert_pending_and_unstored(shared_server, admin, d["uid"], content)
    uploaded = [e for e in admin.events(d["uid"]) if e["kind"] == "data_uploaded"]
    assert uploaded == []
    # A later complete upload of the same object succeeds.
    resp = _put(shared_server, admin, d["uid"], content,
                headers={"X-Content-SHA256": _sha(content)})
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "available"
    assert _blob(shared_server, _sha(content)).read_bytes() == content
    got = _call(shared_server, "GET", f"/data/{d['uid']}/content", admin.token)
    assert got.content == content


def test_checksum_mismatch_keeps_data_pending(shared_server: ServerProcess,
                                              admin: Client) -> None:
    content = _content(700)
    d = _new_data(admin)  # nothing declared: the header alone is checked
    wrong = _sha(content + b"x")
    resp = _put(shared_server, admin, d["uid"], content, headers={"X-Content-SHA256": wrong})
    _error(resp, 400, "checksum_mismatch", _sha(content), wrong)
    _assert_pending_and_unstored(shared_server, admin, d["uid"], content)
    # A correct upload afterwards is accepted.
    resp = _put(shared_server, admin, d["uid"], content,
                headers={"X-Content-SHA256": _sha(content)})
    assert resp.status_code == 200 and resp.json()["sha256"] == _sha(content)


def test_content_differs_from_declared_sha256(shared_server: ServerProcess,
                                              admin: Client) -> None:
    content = _content(700)
    declared = _sha(b"something else")
    d = _new_data(admin, sha256=declared)
    resp = _put(shared_server, admin, d["uid"], content)  # no header: the declaration counts
    _error(resp, 400, "checksum_mismatch", declared)
    _assert_pending_and_unstored(shared_server, admin, d["uid"], content)
    # A header that disagrees with the declaration is refused before anything is read.
    resp = _put(shared_server, admin, d["uid"], content,
                headers={"X-Content-SHA256": _sha(content)})
    _error(resp, 400, "checksum_mismatch", "declared")
    _assert_pending_and_unstored(shared_server, admin, d["uid"], content)
    assert admin.get_data(d["uid"])["sha256"] == declared


@pytest.mark.parametrize("declared,sent", [(10, 20), (20, 10), (1, 0), (0, 1)])
def test_declared_size_differs_from_upload(shared_server: ServerProcess, admin: Client,
                                           declared: int, sent: int) -> None:
    content = _content(sent)
    d = _new_data(admin, size=declared)
    resp = _put(shared_server, admin, d["uid"], content)
    _error(resp, 400, "size_mismatch", f"{declared} bytes", f"has {sent}")
    d2 = admin.get_data(d["uid"])
    assert (d2["status"], d2["size"], d2["sha256"]) == ("pending", declared, None)
    _wait_tmp_empty(shared_server)


def test_second_upload_is_refused(shared_server: ServerProcess, admin: Client,
                                  stored: tuple[dict[str, Any], bytes]) -> None:
    data, content = stored
    other = _content(len(content))
    resp = _put(shared_server, admin, data["uid"], other)
    _error(resp, 409, "already_uploaded", data["uid"])
    assert admin.get_data(data["uid"]) == data
    assert not _blob(shared_server, _sha(other)).exists()
    got = _call(shared_server, "GET", f"/data/{data['uid']}/content", admin.token)
    assert got.content == content


def test_upload_without_length_is_refused(shared_server: ServerProcess, admin: Client) -> None:
    content = _content(300)
    d = _new_data(admin)
    resp = _call(shared_server, "PUT", f"/data/{d['uid']}/content", admin.token,
                 data=iter([content[:100], content[100:]]))  # chunked: no Content-Length
    _error(resp, 400, "no_length", "Content-Length")
    _assert_pending_and_unstored(shared_server, admin, d["uid"], content)


@pytest.mark.parametrize("body", [{"name": "x", "size": -1}, {"name": "x", "sha256": "abc"},
                                  {"name": "x", "sha256": "g" * 64},
                                  {"name": "x", "sha256": "a" * 64 + "\n"},
                                  {"name": ""}, {"name": "x" * 256}])
def test_bad_data_declaration(shared_server: ServerProcess, admin: Client,
                              body: dict[str, Any]) -> None:
    before = admin.list_data()
    resp = _call(shared_server, "POST", "/data", admin.token, json=body)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"] in ("invalid_body", "bad_sha256", "bad_size"), resp.text
    assert admin.list_data() == before


def test_upload_over_the_size_limit(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path, env={"XWVM_MAX_UPLOAD_BYTES": "1000"}).init().start()
    try:
        admin = srv.client()
        big = _content(1001)
        d = _new_data(admin)
        resp = _put(srv, admin, d["uid"], big)
        _error(resp, 413, "too_large", "1001", "1000")
        _assert_pending_and_unstored(srv, admin, d["uid"], big)
        # Exactly at the limit is fine.
        ok = _content(1000)
        resp = _put(srv, admin, d["uid"], ok)
        assert resp.status_code == 200, resp.text
        assert resp.json()["size"] == 1000
        assert _blob(srv, _sha(ok)).read_bytes() == ok
    finally:
        srv.stop()


def test_identical_content_shares_one_blob(shared_server: ServerProcess,
                                           admin: Client) -> None:
    content = _content(4096)
    a = _upload(shared_server, admin, content, name="a.bin")
    b = _upload(shared_server, admin, content, name="b.bin")
    assert a["uid"] != b["uid"] and a["sha256"] == b["sha256"] == _sha(content)
    blob = _blob(shared_server, _sha(content))
    assert blob.read_bytes() == content
    same = [p for p in (shared_server.data_dir / "blobs").rglob(_sha(content))]
    assert same == [blob]
    admin.delete_data(a["uid"])
    with pytest.raises(ApiError) as e:
        admin.get_data(a["uid"])
    assert e.value.code == "unknown_data"
    assert blob.exists()
    got = _call(shared_server, "GET", f"/data/{b['uid']}/content", admin.token)
    assert got.status_code == 200 and got.content == content
    # The last reference gone, the blob goes too.
    admin.delete_data(b["uid"])
    assert not blob.exists()


# --- downloads ---------------------------------------------------------------------------


def test_full_download_has_etag_and_digest(shared_server: ServerProcess, admin: Client,
                                           stored: tuple[dict[str, Any], bytes]) -> None:
    data, content = stored
    resp = _call(shared_server, "GET", f"/data/{data['uid']}/content", admin.token)
    assert resp.status_code == 200
    assert resp.content == content
    assert resp.headers["ETag"] == f'"{_sha(content)}"'
    assert resp.headers["X-Content-SHA256"] == _sha(content)
    assert resp.headers["Accept-Ranges"] == "bytes"
    assert resp.headers["Content-Length"] == str(len(content))
    assert "stored.bin" in resp.headers["Content-Disposition"]


@pytest.mark.parametrize("spec,start,end", [
    ("bytes=0-0", 0, 0), ("bytes=10-19", 10, 19), ("bytes=990-", 990, 999),
    ("bytes=-7", 993, 999), ("bytes=500-5000", 500, 999), ("bytes=-5000", 0, 999),
    ("bytes=999-999", 999, 999),
])
def test_range_download(shared_server: ServerProcess, admin: Client,
                        stored: tuple[dict[str, Any], bytes], spec: str, start: int,
                        end: int) -> None:
    data, content = stored
    resp = _call(shared_server, "GET", f"/data/{data['uid']}/content", admin.token,
                 headers={"Range": spec})
    assert resp.status_code == 206, resp.text
    assert resp.headers["Content-Range"] == f"bytes {start}-{end}/{len(content)}"
    assert resp.headers["Content-Length"] == str(end - start + 1)
    assert resp.content == content[start:end + 1]


@pytest.mark.parametrize("spec", ["bytes=1000-", "bytes=5000-6000", "bytes=0-1,5-6",
                                  "bytes=0-1,-1"])
def test_unsatisfiable_range_is_416(shared_server: ServerProcess, admin: Client,
                                    stored: tuple[dict[str, Any], bytes], spec: str) -> None:
    data, _ = stored
    resp = _call(shared_server, "GET", f"/data/{data['uid']}/content", admin.token,
                 headers={"Range": spec})
    assert resp.status_code == 416, (spec, resp.status_code, resp.text)
    assert resp.json()["error"] == "range_not_satisfiable"
    assert "range" in resp.json()["message"]


def test_conditional_download(shared_server: ServerProcess, admin: Client,
                              stored: tuple[dict[str, Any], bytes]) -> None:
    data, content = stored
    etag = f'"{_sha(content)}"'
    path = f"/data/{data['uid']}/content"
    resp = _call(shared_server, "GET", path, admin.token, headers={"If-None-Match": etag})
    assert resp.status_code == 304 and resp.content == b""
    assert resp.headers["ETag"] == etag
    # Another ETag: the full content.
    other = f'"{_sha(b"other")}"'
    resp = _call(shared_server, "GET", path, admin.token, headers={"If-None-Match": other})
    assert resp.status_code == 200 and resp.content == content
    # If-Range with the right ETag honours the range; with a stale one, the whole file.
    resp = _call(shared_server, "GET", path, admin.token,
                 headers={"Range": "bytes=100-199", "If-Range": etag})
    assert resp.status_code == 206 and resp.content == content[100:200]
    resp = _call(shared_server, "GET", path, admin.token,
                 headers={"Range": "bytes=100-199", "If-Range": other})
    assert resp.status_code == 200 and resp.content == content


def test_download_of_pending_data_is_409(shared_server: ServerProcess, admin: Client,
                                         tmp_path: Path) -> None:
    d = _new_data(admin, size=10)
    resp = _call(shared_server, "GET", f"/data/{d['uid']}/content", admin.token)
    _error(resp, 409, "data_pending", d["uid"], "no content yet")
    with pytest.raises(ApiError) as e:
        admin.download_data(d["uid"], tmp_path / "never.bin")
    assert (e.value.status, e.value.code) == (409, "data_pending")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ['quote" and\r\nX-Injected: yes',
                                  "r\u00e9sultats \u65e5\u672c.txt", "back\\slash;x=1",
                                  "tab\there"])
def test_download_with_awkward_name(shared_server: ServerProcess, admin: Client,
                                    name: str) -> None:
    """Names are free text; they must not break (or inject into) the download's headers."""
    content = _content(50)
    data = _upload(shared_server, admin, content, name=name)
    assert data["name"] == name
    resp = _call(shared_server, "GET", f"/data/{data['uid']}/content", admin.token)
    assert resp.status_code == 200, resp.text
    assert resp.content == content
    assert "X-Injected" not in resp.headers
    disposition = resp.headers["Content-Disposition"]
    assert disposition.startswith("attachment; ")
    assert f"filename*=UTF-8''{quote(name, safe='')}" in disposition


# --- resumed downloads through the SDK ----------------------------------------------------


def test_sdk_resumes_a_partial_download(shared_server: ServerProcess, admin: Client,
                                        tmp_path: Path) -> None:
    content = _content(300_000)
    data = _upload(shared_server, admin, content)
    dest = tmp_path / "out.bin"
    part = tmp_path / "out.bin.part"
    part.write_bytes(content[:150_000])
    seen: list[int] = []
    assert admin.download_data(data["uid"], dest, progress=seen.append) == dest
    assert dest.read_bytes() == content
    assert not part.exists()
    assert seen[0] == 150_000 and sum(seen) == len(content)  # resumed, not restarted


def test_sdk_resume_detects_a_corrupted_part(shared_server: ServerProcess, admin: Client,
                                             tmp_path: Path) -> None:
    """A corrupted first half is only caught if the client really asked for the rest with
    Range (a full download would overwrite it and succeed)."""
    content = _content(300_000)
    data = _upload(shared_server, admin, content)
    dest = tmp_path / "out.bin"
    part = tmp_path / "out.bin.part"
    bad = bytearray(content[:150_000])
    bad[1234] ^= 0xFF
    part.write_bytes(bytes(bad))
    with pytest.raises(ApiError) as e:
        admin.download_data(data["uid"], dest)
    assert e.value.code == "checksum_mismatch"
    assert _sha(content) in e.value.message
    assert not part.exists() and not dest.exists()
    # The retry starts from scratch and succeeds.
    admin.download_data(data["uid"], dest)
    assert dest.read_bytes() == content


def test_sdk_restarts_when_the_part_is_complete_or_too_long(shared_server: ServerProcess,
                                                            admin: Client,
                                                            tmp_path: Path) -> None:
    content = _content(5000)
    data = _upload(shared_server, admin, content)
    for junk in (content, content + b"extra"):
        dest = tmp_path / f"out-{len(junk)}.bin"
        dest.with_name(dest.name + ".part").write_bytes(junk)
        admin.download_data(data["uid"], dest)  # 416, then a full download
        assert dest.read_bytes() == content
        assert not dest.with_name(dest.name + ".part").exists()
