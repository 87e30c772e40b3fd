"""Resumable chunked uploads over the real HTTPS API: offsets, gaps and overlaps, checksum,
owner-only access, resuming after a client crash and a server restart, expiry."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.processes import ServerProcess
from tests.templates.conftest import MiB, random_file, server_blob, sha
from xwvm.client.cli_template_store import PushState, upload_resumable
from xwvm.client.sdk import ApiError, Client
from xwvm.server.blobs import BlobStore
from xwvm.server.db.engine import make_engine, make_sessionmaker
from xwvm.server.db.models import UploadSession
from xwvm.server.services import uploads as upload_service


def _put(server: ServerProcess, c: Client, uid: str, body: bytes, start: int,
         total: int) -> requests.Response:
    return requests.put(f"{server.url}/api/v1/uploads/{uid}", data=body, verify=str(server.ca),
                        timeout=30, headers={
                            "Authorization": f"Bearer {c.token}",
                            "Content-Range": f"bytes {start}-{start + len(body) - 1}/{total}"})


def _error(resp: requests.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, (resp.status_code, resp.text)
    body = resp.json()
    assert body["error"] == code, body
    return body


def test_chunks_append_only_at_the_offset(shared_server: ServerProcess, admin: Client,
                                          tmp_path: Path) -> None:
    f = random_file(tmp_path / "a.bin", 3 * MiB + 5)
    data, total = f.read_bytes(), f.stat().st_size
    up = admin.create_upload(total, sha(f))
    assert (up["received"], up["status"], up["chunk_size"]) == (0, "open", 8 * MiB)
    assert _put(shared_server, admin, up["uid"], data[:MiB], 0, total).status_code == 200
    # a gap and an overlap are refused with the current offset
    gap = _error(_put(shared_server, admin, up["uid"], data[2 * MiB:3 * MiB], 2 * MiB, total),
                 409, "offset_mismatch")
    assert gap["details"]["offset"] == MiB
    overlap = _put(shared_server, admin, up["uid"], data[MiB // 2:2 * MiB], MiB // 2, total)
    assert _error(overlap, 409, "offset_mismatch")["details"]["offset"] == MiB
    head = requests.head(f"{shared_server.url}/api/v1/uploads/{up['uid']}",
                         headers={"Authorization": f"Bearer {admin.token}"},
                         verify=str(shared_server.ca), timeout=30)
    assert head.headers["Upload-Offset"] == str(MiB)
    # an unfinished upload cannot complete; a chunk whose total differs is refused
    with pytest.raises(ApiError) as e:
        admin.post(f"/uploads/{up['uid']}/complete")
    assert e.value.code == "upload_incomplete" and e.value.details["offset"] == MiB
    _error(_put(shared_server, admin, up["uid"], data[MiB:2 * MiB], MiB, total + 1),
           400, "size_mismatch")
    _error(requests.put(f"{shared_server.url}/api/v1/uploads/{up['uid']}", data=b"x",
                        headers={"Authorization": f"Bearer {admin.token}"},
                        verify=str(shared_server.ca), timeout=30), 400, "bad_content_range")
    assert _put(shared_server, admin, up["uid"], data[MiB:], MiB, total).status_code == 200
    done = admin.post(f"/uploads/{up['uid']}/complete")
    assert (done["status"], done["received"]) == ("complete", total)
    assert server_blob(shared_server, sha(f)).read_bytes() == data
    assert admin.post(f"/uploads/{up['uid']}/complete")["status"] == "complete"  # idempotent


def test_checksum_mismatch_resets_the_upload(shared_server: ServerProcess, admin: Client,
                                             tmp_path: Path) -> None:
    f = random_file(tmp_path / "b.bin", 100_000)
    up = admin.create_upload(100_000, hashlib.sha256(b"something else").hexdigest())
    assert _put(shared_server, admin, up["uid"], f.read_bytes(), 0, 100_000).ok
    with pytest.raises(ApiError) as e:
        admin.post(f"/uploads/{up['uid']}/complete")
    assert e.value.code == "checksum_mismatch" and e.value.details == {"offset": 0}
    assert admin.get_upload(up["uid"])["received"] == 0
    assert not server_blob(shared_server, sha(f)).exists()


def test_uploads_are_owner_only_and_need_group_admin(shared_server: ServerProcess,
                                                     admin: Client, tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("password-123")
    admin.create_user("uploader-std", "password-123", "standard")
    admin.create_user("uploader-ga", "password-123", "group_admin")
    std, ga = (shared_server.client(u, "password-123") for u in ("uploader-std", "uploader-ga"))
    with pytest.raises(ApiError) as e:
        std.create_upload(10, "0" * 64)
    assert (e.value.status, e.value.code) == (403, "forbidden_level")
    up = admin.create_upload(10, "0" * 64)
    for call in (lambda: ga.get_upload(up["uid"]),
                 lambda: ga.post(f"/uploads/{up['uid']}/complete")):
        with pytest.raises(ApiError) as e:
            call()
        assert (e.value.status, e.value.code) == (403, "forbidden_access")
    _error(_put(shared_server, ga, up["uid"], b"0123456789", 0, 10), 403, "forbidden_access")


def test_resume_after_client_crash_and_server_restart(server: ServerProcess,
                                                      tmp_path: Path) -> None:
    """The client dies after 2 of 5 chunks; the server restarts; the same push resumes
    from the server's offset and sends only the rest."""
    c = server.client()
    f = random_file(tmp_path / "disk.img", 5 * MiB)
    state = PushState(tmp_path / "uploads.json")
    sent: list[int] = []

    class Crash(Exception):
        pass

    def dying(n: int) -> None:
        sent.append(n)
        if len(sent) == 2:
            raise Crash

    with pytest.raises(Crash):
        c.upload_file(f, chunk_size=MiB, progress=dying,
                      on_session=lambda uid: state.put(PushState.key(c.server, sha(f), 5 * MiB),
                                                       uid))
    server.stop()
    server.start()
    c = server.client()
    resumed: list[int] = []
    up = upload_resumable(c, f, state, resumed.append)
    assert up["status"] == "complete" and up["size"] == 5 * MiB
    assert resumed[0] == 2 * MiB  # reported as already there, not sent again
    assert sum(resumed[1:]) == 3 * MiB
    assert server_blob(server, sha(f)).read_bytes() == f.read_bytes()


def test_expired_sessions_are_swept(shared_server: ServerProcess, admin: Client,
                                    tmp_path: Path) -> None:
    f = random_file(tmp_path / "c.bin", 4096)
    up = admin.create_upload(4096, sha(f))
    assert _put(shared_server, admin, up["uid"], f.read_bytes()[:1000], 0, 4096).ok
    store = BlobStore(shared_server.data_dir / "blobs" / "images")
    part = upload_service.part_path(store, up["uid"])
    assert part.stat().st_size == 1000
    engine = make_engine(f"sqlite:///{shared_server.data_dir / 'xwvm.db'}")
    try:
        with make_sessionmaker(engine)() as db:
            later = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
            assert upload_service.sweep_expired(db, store, now=later) >= 1
            db.commit()
            assert db.get(UploadSession, up["uid"]) is None
    finally:
        engine.dispose()
    assert not part.exists()
    with pytest.raises(ApiError) as e:
        admin.get_upload(up["uid"])
    assert e.value.code == "unknown_upload"
