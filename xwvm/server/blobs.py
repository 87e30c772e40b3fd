"""Content-addressed blob store on the local file system (sha256 names, atomic publish)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from xwvm.errors import BadRequest, TooLarge, XwvmError

CHUNK = 1024 * 1024
DIR_MODE = 0o700
FILE_MODE = 0o600
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


class StorageFull(XwvmError):
    """The server's disk (blob store or database) has no room: nothing was stored, and the
    server goes on serving. 507 Insufficient Storage (RFC 4918)."""

    status, code = 507, "storage_full"


def is_full(e: BaseException) -> bool:
    """An OS error saying the filesystem, or the user's quota on it, is full."""
    return isinstance(e, OSError) and e.errno in _FULL


@contextlib.contextmanager
def full_disk(what: str, undo: Callable[[], object] | None = None) -> Iterator[None]:
    """Turn a full disk met inside the block into :class:`StorageFull` naming ``what``
    (never a path of the server's disk), after ``undo`` removed what was half-written."""
    try:
        yield
    except OSError as e:
        if not is_full(e):
            raise
        if undo is not None:
            undo()
        raise StorageFull(f"the server's blob store is full: {what} not stored") from e


@dataclass(frozen=True)
class StoredBlob:
    sha256: str
    size: int


class BlobStore:
    """Blobs live at ``root/ab/cd/<sha256>``; an upload is written to ``root/tmp`` and
    renamed into place only once its size and digest are verified, so an interrupted
    upload never leaves a visible blob. Directories are 0700 and files 0600 whatever the
    process umask (the server also sets one): blobs are private data."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.tmp = self.root / "tmp"
        self.tmp.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def put_stream(self, stream: BinaryIO, *, length: int, max_size: int,
                   expected_sha256: str | None = None, what: str = "the upload") -> StoredBlob:
        """Store ``length`` bytes of ``stream``; a full disk raises :class:`StorageFull`
        naming ``what``, and the partial file is removed whatever went wrong."""
        if length > max_size:
            raise TooLarge(f"upload of {length} bytes exceeds the limit of {max_size} bytes")
        tmp = self.tmp / f"{uuid.uuid4().hex}.part"
        try:
            with full_disk(what):
                return self._write(stream, tmp, length, expected_sha256)
        finally:
            if tmp.exists():
                tmp.unlink()

    def _write(self, stream: BinaryIO, tmp: Path, length: int,
               expected_sha256: str | None) -> StoredBlob:
        digest = hashlib.sha256()
        got = 0
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE),
                       "wb") as out:
            while got < length:
                chunk = stream.read(min(CHUNK, length - got))
                if not chunk:
                    break
                digest.update(chunk)
                out.write(chunk)
                got += len(chunk)
            if got < length:
                raise BadRequest(f"truncated upload: received {got} of {length} bytes",
                                 code="truncated")
            out.flush()
            os.fsync(out.fileno())
        sha = digest.hexdigest()
        if expected_sha256 and sha != expected_sha256.lower():
            raise BadRequest(f"checksum mismatch: the upload's sha256 is {sha}, "
                             f"expected {expected_sha256}", code="checksum_mismatch")
        final = self.path(sha)
        final.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        if final.exists():
            tmp.unlink()
        else:
            os.replace(tmp, final)
        return StoredBlob(sha256=sha, size=got)

    def read_range(self, sha256: str, start: int, end: int) -> Iterator[bytes]:
        """Yield bytes start..end inclusive."""
        with open(self.path(sha256), "rb") as f:
            f.seek(start)
            left = end - start + 1
            while left > 0:
                chunk = f.read(min(CHUNK, left))
                if not chunk:
                    return
                left -= len(chunk)
                yield chunk

    def remove(self, sha256: str) -> None:
        self.path(sha256).unlink(missing_ok=True)
