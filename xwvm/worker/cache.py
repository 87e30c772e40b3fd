"""The worker's content-addressed data cache (job inputs and app binaries), and the record
of which cached files this worker process has itself verified.

A cached file is trusted by its content, never by its name: anything that can write
into the cache (a crafted input name, a payload) could plant bytes under a sha256's
name. So the first use of a file after the worker started hashes it again; later uses
are cheap as long as its (device, inode, size, mtime, ctime) did not change: ctime
cannot be set back from user space, so a rewrite is always seen.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from xwvm.client.sdk import Client
from xwvm.errors import XwvmError
from xwvm.ids import check_sha256, check_uid
from xwvm.protocol.digest import sha256_file
from xwvm.protocol.messages import InputFile
from xwvm.worker.faults import DiskFull, is_disk_full

log = logging.getLogger("xwvm.worker")
DEFAULT_QUOTA_BYTES = 10 * 2**30
PARTIAL_SUFFIXES = (".download", ".download.part", ".part")


def _stat_key(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def free_bytes(path: Path) -> int:
    """Bytes the worker may still write on ``path``'s filesystem."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


@contextlib.contextmanager
def disk_full(cache: str, root: Path, what: str, need: int | None,
              partials: Iterable[Path]) -> Iterator[None]:
    """A full disk (ENOSPC, EDQUOT) met inside the block removes ``partials`` and raises
    :class:`~xwvm.worker.faults.DiskFull` saying which cache, what needed how many bytes
    and how many are free once they are gone: nothing half-written stays for a later job
    to trust, and a later fetch, once space is back, starts afresh."""
    try:
        yield
    except Exception as e:
        if not is_disk_full(e):
            raise
        for path in partials:
            path.unlink(missing_ok=True)
        if isinstance(e, DiskFull):
            raise
        size = "an unknown number of" if need is None else str(need)
        raise DiskFull(f"the worker's {cache} is on a full disk: {what} needs {size} bytes, "
                       f"{free_bytes(root)} bytes are free; the partial file was removed"
                       ) from e


class VerifiedFiles:
    """Which files this process hashed (or wrote) and found to be their sha256; in memory
    only, so that nothing on disk can vouch for a file."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[int, ...]] = {}
        self._lock = threading.Lock()

    def check(self, path: Path, sha256: str) -> bool:
        """True if ``path`` holds ``sha256``: from the record, else by hashing it now."""
        try:
            before = _stat_key(os.stat(path))
        except FileNotFoundError:
            return False
        with self._lock:
            if self._seen.get(str(path)) == before:
                return True
        if sha256_file(path) != sha256:
            log.warning("cached %s does not match its sha256: not used", path)
            return False
        with self._lock:  # stat taken before hashing: a change meanwhile is seen next time
            self._seen[str(path)] = before
        return True

    def record(self, path: Path) -> None:
        """``path`` was just written and verified by this process."""
        with self._lock:
            self._seen[str(path)] = _stat_key(os.stat(path))

    def touch(self, path: Path) -> None:
        """Mark ``path`` recently used (LRU) without losing its verified record."""
        key = str(path)
        with self._lock:
            known = self._seen.get(key) == _stat_key(os.stat(path))
            os.utime(path)
            if known:
                self._seen[key] = _stat_key(os.stat(path))


class DataCache:
    """``root/<sha256>``, at most ``quota_bytes`` (partial downloads included); the least
    recently used files not held by the running job go first."""

    def __init__(self, root: Path, quota_bytes: int = DEFAULT_QUOTA_BYTES) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        # Job inputs may be private: no other local user lists or reads the cache (jobs get
        # copies; QEMU never reads it).
        self.root.chmod(0o700)
        self.quota = quota_bytes
        self.verified = VerifiedFiles()
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._held: set[str] | None = None  # inside holding(): what it got

    def path(self, sha256: Any) -> Path:
        return self.root / check_sha256(sha256, "data")

    def _lock(self, sha256: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(sha256, threading.Lock())

    def remove_partials(self) -> list[Path]:
        """Downloads a previous run left half-done (at worker start)."""
        gone = [p for p in self.root.iterdir() if p.name.endswith(PARTIAL_SUFFIXES)]
        for p in gone:
            p.unlink(missing_ok=True)
        return gone

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        """Files got inside the block are not evicted until it ends (a job's inputs)."""
        with self._guard:
            self._held = set()
        try:
            yield
        finally:
            with self._guard:
                self._held = None

    def get(self, sha256: Any, fetch: Callable[[Path], None], size: int | None = None) -> Path:
        """The cached file, verified; ``fetch(dest)`` downloads it when missing or damaged
        (at most ``size`` bytes, the declared size, made room for under the quota). Two
        callers wanting the same content cause one download."""
        final = self.path(sha256)
        with self._lock(sha256):
            with self._guard:
                if self._held is not None:
                    self._held.add(sha256)
            if final.is_file() and self.verified.check(final, sha256):
                self.verified.touch(final)
                return final
            final.unlink(missing_ok=True)
            self.evict(size or 0)
            tmp = self.root / f"{sha256}.download"
            with disk_full("data cache", self.root, f"job file {sha256[:12]}", size,
                           (tmp, tmp.with_name(f"{tmp.name}.part"))):
                fetch(tmp)
            if sha256_file(tmp) != sha256:
                tmp.unlink()
                raise OSError(f"cached download does not match sha256 {sha256}")
            os.chmod(tmp, 0o444)
            os.replace(tmp, final)
            self.verified.record(final)
            return final

    def job_file(self, client: Client, f: InputFile) -> Path:
        """A job's file, its data id checked and its download stopped at its declared
        size."""
        data = check_uid(f.data, "data")
        return self.get(f.sha256, lambda dest: client.download_data(
            data, dest, sha256=f.sha256, size=f.size), f.size)

    def forget(self, files: Iterable[InputFile]) -> None:
        """Remove a finished job's inputs (they may be private to their owner): only app
        binaries, shared by every job of their app, stay cached."""
        for f in files:
            if f.role != "app":
                with contextlib.suppress(XwvmError):
                    self.path(f.sha256).unlink(missing_ok=True)

    def size(self) -> int:
        return sum(size for _, _, size in self._entries())

    def evict(self, need: int) -> None:
        """Remove least recently used files until ``need`` more bytes fit."""
        if need > self.quota:
            raise XwvmError(f"a job file of {need} bytes is larger than the data cache's "
                            f"quota of {self.quota} bytes", code="cache_full")
        entries = sorted(self._entries())
        total = sum(size for _, _, size in entries)
        with self._guard:
            held = set(self._held or ())
        for _, path, size in entries:
            if total + need <= self.quota:
                return
            if path.name in held or path.name.endswith(PARTIAL_SUFFIXES):
                continue  # the running job's files; partials of downloads under way
            path.unlink(missing_ok=True)
            total -= size
        if total + need > self.quota:
            raise XwvmError(f"the data cache cannot hold {need} more bytes: {total} of its "
                            f"{self.quota} bytes are in use", code="cache_full")

    def _entries(self) -> list[tuple[float, Path, int]]:
        out = []
        for path in self.root.iterdir():
            with contextlib.suppress(FileNotFoundError):
                st = path.stat()
                out.append((st.st_mtime, path, st.st_size))
        return out
