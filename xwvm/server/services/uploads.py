"""Resumable chunked uploads: state in the database, bytes in a part file, blob at the end.

An upload session declares a size and a sha256. Chunks are appended at the current
offset only (``Content-Range``); the offset lives in the database, so a client that
crashed, or a server that restarted, resumes where the last committed chunk ended. On
completion the part file is hashed once (whole-file sha256 plus the chunk manifest used
for incremental updates) and renamed into the blob store. Sessions untouched for
``SESSION_TTL_S`` are swept away with their part files.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from xwvm.errors import BadRequest, Conflict, Forbidden, NotFound, TooLarge
from xwvm.server import events, policy
from xwvm.server.blobs import BlobStore, full_disk
from xwvm.server.db.models import Template, UploadSession, utcnow
from xwvm.server.policy import Principal
from xwvm.server.services.common import check_uid

CONTENT_RANGE_RE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)\Z")
DEFAULT_CHUNK = 8 * 1024 * 1024  # what clients send per request
MANIFEST_CHUNK = 4 * 1024 * 1024  # the piece size of chunk manifests (incremental updates)
SESSION_TTL_S = 24 * 3600
IO_BLOCK = 1024 * 1024


@dataclass(frozen=True)
class Digests:
    sha256: str
    size: int
    chunks: list[str]


def part_path(store: BlobStore, uid: str) -> Path:
    return store.root / "uploads" / f"{uid}.part"


def hash_file(path: Path, chunk_size: int = MANIFEST_CHUNK) -> Digests:
    """The whole file's sha256 and the sha256 of each ``chunk_size`` piece, in one pass."""
    whole = hashlib.sha256()
    chunks: list[str] = []
    size = 0
    with open(path, "rb") as f:
        while True:
            piece = f.read(chunk_size)
            if not piece:
                break
            whole.update(piece)
            chunks.append(hashlib.sha256(piece).hexdigest())
            size += len(piece)
    return Digests(whole.hexdigest(), size, chunks)


def parse_content_range(header: str | None) -> tuple[int, int, int]:
    m = CONTENT_RANGE_RE.match((header or "").strip())
    if not m:
        raise BadRequest("a chunk needs a header 'Content-Range: bytes START-END/TOTAL'",
                         code="bad_content_range")
    start, end, total = map(int, m.groups())
    if end < start or end >= total:
        raise BadRequest("the Content-Range header is not a range inside the upload",
                         code="bad_content_range")
    return start, end, total


def create(db: Session, store: BlobStore, p: Principal, size: int, sha256: str, *,
           max_size: int) -> UploadSession:
    policy.require(p, "upload_blob")
    sha256 = sha256.lower()  # the API's schema took its shape (64 hexadecimal digits)
    if size > max_size:
        raise TooLarge(f"upload of {size} bytes exceeds the limit of {max_size} bytes")
    sweep_expired(db, store)
    up = UploadSession(owner_uid=p.uid, size=size, sha256=sha256, chunk_size=MANIFEST_CHUNK)
    known = _known_chunks(db, p, sha256, size)
    if known is not None:  # the content is already stored for a template this user reads
        up.status, up.received, up.chunks = "complete", size, known
    db.add(up)
    db.flush()
    if known is None:
        path = part_path(store, up.uid)
        with full_disk(f"upload {up.uid}"):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)  # bytes of a template being pushed: the server's alone
    events.record(db, "upload_created", object_uid=up.uid, actor_uid=p.uid,
                  detail=f"{size} bytes sha256 {sha256}" + (" (already stored)" if known
                                                            is not None else ""))
    return up


def _known_chunks(db: Session, p: Principal, sha256: str, size: int) -> list[str] | None:
    for t in db.scalars(select(Template)):
        for a in t.artifacts:
            if (a["sha256"] == sha256 and a["size"] == size and policy.allows(p, t, "r")
                    and a.get("chunk_size") == MANIFEST_CHUNK):
                return list(a.get("chunks") or [])
    return None


def get_owned(db: Session, p: Principal, uid: str) -> UploadSession:
    """Uploads are the uploader's alone (not even a super user appends to one), and never
    a VM's: a delegated credential carries its owner's uid but not its owner's powers."""
    if p.is_delegated:
        raise Forbidden("a delegated VM credential may not touch uploads",
                        code="forbidden_delegated")
    up = db.get(UploadSession, check_uid(uid, "upload"))
    if up is None:
        raise NotFound(f"no upload with id {uid} (finished long ago, or expired)",
                       code="unknown_upload")
    if up.owner_uid != p.uid:
        raise Forbidden(f"upload {uid} belongs to another user", code="forbidden_access")
    return up


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[int]:
    """An exclusive lock on the part file, across threads and server processes."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        raise Conflict("the upload's part file is gone; start a new upload",
                       code="upload_lost") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Conflict("another request is writing this upload; retry", code="upload_busy"
                           ) from None
        yield fd
    finally:
        os.close(fd)


def _offset_conflict(up: UploadSession, start: int) -> Conflict:
    return Conflict(f"upload {up.uid} has {up.received} bytes; a chunk must start there, "
                    f"not at {start}", code="offset_mismatch",
                    details={"offset": up.received, "size": up.size})


def append(db: Session, store: BlobStore, p: Principal, uid: str, content_range: str | None,
           stream: BinaryIO, length: int) -> UploadSession:
    """Write one chunk at the session's offset; answer 409 with the offset otherwise."""
    start, end, total = parse_content_range(content_range)
    up = get_owned(db, p, uid)
    if up.status != "open":
        raise Conflict(f"upload {uid} is already complete", code="upload_complete")
    if total != up.size:
        raise BadRequest(f"upload {uid} was declared with {up.size} bytes, the chunk says "
                         f"{total}", code="size_mismatch")
    if end - start + 1 != length:
        raise BadRequest(f"Content-Range covers {end - start + 1} bytes, the body has "
                         f"{length}", code="length_mismatch")
    if start != up.received:
        raise _offset_conflict(up, start)
    path = part_path(store, up.uid)
    # The database must not stay locked (SQLite) while the chunk crosses the network.
    db.rollback()
    with _locked(path) as fd:
        db.refresh(up)
        if start != up.received:  # another process appended in between
            raise _offset_conflict(up, start)
        db.rollback()
        os.ftruncate(fd, start)  # drop bytes of a chunk whose commit never happened
        _write_chunk(fd, stream, start, length, up.uid)
        moved = db.execute(update(UploadSession)
                           .where(UploadSession.uid == up.uid, UploadSession.received == start,
                                  UploadSession.status == "open")
                           .values(received=start + length, updated_at=utcnow()))
        if moved.rowcount != 1:
            db.rollback()
            raise Conflict(f"upload {uid} moved on while this chunk was written; ask for its "
                           "offset", code="offset_mismatch")
        db.commit()
    db.refresh(up)
    return up


def _write_chunk(fd: int, stream: BinaryIO, start: int, length: int, uid: str) -> None:
    """The chunk written at ``start`` and synced; a short body or a full disk leaves the
    part file as the last committed chunk left it (truncated back to ``start``)."""
    with full_disk(f"{length} bytes of upload {uid} (at offset {start})",
                   undo=lambda: os.ftruncate(fd, start)):
        got = _copy(stream, fd, start, length)
        if got < length:
            os.ftruncate(fd, start)
            raise BadRequest(f"truncated chunk: received {got} of {length} bytes",
                             code="truncated", details={"offset": start})
        os.fsync(fd)


def _copy(stream: BinaryIO, fd: int, offset: int, length: int) -> int:
    got = 0
    while got < length:
        block = stream.read(min(IO_BLOCK, length - got))
        if not block:
            break
        view = memoryview(block)
        while view:  # a short write (a disk filling up) is not an error yet: go on until one
            done = os.pwrite(fd, view, offset + got)
            view = view[done:]
            got += done
    return got


def complete(db: Session, store: BlobStore, p: Principal, uid: str) -> UploadSession:
    """Verify size and sha256 and publish the blob; idempotent once it succeeded."""
    up = get_owned(db, p, uid)
    if up.status == "complete":
        return up
    if up.received != up.size:
        raise Conflict(f"upload {uid} has {up.received} of {up.size} bytes",
                       code="upload_incomplete", details={"offset": up.received,
                                                          "size": up.size})
    path = part_path(store, up.uid)
    db.rollback()
    final = store.path(up.sha256)
    if not path.exists() and final.is_file():  # crashed between publish and commit
        digests = hash_file(final, up.chunk_size)
        return _mark_complete(db, p, up, digests)
    with _locked(path) as fd:
        digests = hash_file(path, up.chunk_size)
        if digests.sha256 != up.sha256 or digests.size != up.size:
            os.ftruncate(fd, 0)
            db.execute(update(UploadSession).where(UploadSession.uid == up.uid)
                       .values(received=0, updated_at=utcnow()))
            db.commit()
            raise BadRequest(f"checksum mismatch: the uploaded bytes hash to {digests.sha256}, "
                             f"declared {up.sha256}; the upload was reset to offset 0",
                             code="checksum_mismatch", details={"offset": 0})
        with full_disk(f"the {up.size} bytes of upload {uid}"):
            os.fsync(fd)
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.exists():
                path.unlink()
            else:
                os.replace(path, final)
    return _mark_complete(db, p, up, digests)


def _mark_complete(db: Session, p: Principal, up: UploadSession,
                   digests: Digests) -> UploadSession:
    db.execute(update(UploadSession).where(UploadSession.uid == up.uid)
               .values(status="complete", chunks=digests.chunks, updated_at=utcnow()))
    events.record(db, "upload_completed", object_uid=up.uid, actor_uid=p.uid,
                  detail=f"{up.size} bytes sha256 {up.sha256}")
    db.commit()
    db.refresh(up)
    return up


def abort(db: Session, store: BlobStore, p: Principal, uid: str) -> None:
    up = get_owned(db, p, uid)
    _drop(db, store, up)
    events.record(db, "upload_aborted", object_uid=uid, actor_uid=p.uid)


def consume(db: Session, p: Principal, uid: str) -> UploadSession:
    """A complete upload handed over to an object (a template); the session ends."""
    up = get_owned(db, p, uid)
    if up.status != "complete":
        raise Conflict(f"upload {uid} is not complete ({up.received} of {up.size} bytes)",
                       code="upload_incomplete", details={"offset": up.received})
    db.delete(up)
    return up


def blob_referenced(db: Session, sha256: str, *, ignore_template: str | None = None) -> bool:
    """True when a template or another upload session still needs the image blob."""
    for t in db.scalars(select(Template)):
        if t.uid != ignore_template and any(a["sha256"] == sha256 for a in t.artifacts):
            return True
    q = select(UploadSession.uid).where(UploadSession.sha256 == sha256,
                                        UploadSession.status == "complete").limit(1)
    return db.execute(q).first() is not None


def _drop(db: Session, store: BlobStore, up: UploadSession) -> None:
    part_path(store, up.uid).unlink(missing_ok=True)
    db.delete(up)
    db.flush()
    if up.status == "complete" and not blob_referenced(db, up.sha256):
        store.remove(up.sha256)


def sweep_expired(db: Session, store: BlobStore, *, now: dt.datetime | None = None,
                  ttl_s: float = SESSION_TTL_S) -> int:
    """Remove sessions idle for ``ttl_s`` (their part files, and unclaimed blobs)."""
    cutoff = (now or utcnow()) - dt.timedelta(seconds=ttl_s)
    stale = db.scalars(select(UploadSession).where(UploadSession.updated_at < cutoff)).all()
    for up in stale:
        _drop(db, store, up)
        events.record(db, "upload_expired", object_uid=up.uid, actor_uid=None,
                      detail=f"{up.received} of {up.size} bytes")
    return len(stale)
