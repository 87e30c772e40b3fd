"""Owns the worker's template image cache and the check that a template may boot.

Layout under the cache root::

    blobs/<sha256>        a verified artifact, read-only, renamed into place whole
    blobs/<sha256>.part   a download in progress (resumed with HTTP Range; counted in the
                          quota, never longer than the signed size, evicted when stale)
    locks/<sha256>.lock   flock: exclusive while downloading or evicting, shared while used
    chunks/<sha256>.json  the artifact's chunk manifest (a base for incremental updates)
    templates/<uid>.json  which blobs a template was served from (for ``holdings``)

The locks are ``flock`` locks on a file per sha256, so they work between the threads of
one worker (each use opens its own descriptor) and between worker processes sharing the
directory: one download per artifact, and eviction skips whatever anyone has pinned.

A blob is trusted by its content, not its name: its first use in this process hashes it
again (see :class:`xwvm.worker.cache.VerifiedFiles`), and a blob that does not match is
fetched afresh. Chunk manifests come from the server unsigned: their chunk size is
bounded (MAX_CHUNK) or the manifest is ignored.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from xwvm import signing
from xwvm.client.sdk import ApiError, Client
from xwvm.errors import XwvmError
from xwvm.ids import check_sha256, check_uid
from xwvm.protocol.digest import BLOCK
from xwvm.protocol.messages import ChunkManifest, TemplateArtifact, TemplateDescription
from xwvm.worker.cache import VerifiedFiles, disk_full

CACHE = "image cache"  # as a full disk's message names it
MAX_CHUNK = 16 * 1024 * 1024  # a chunk is held in memory once: the server does not choose
Progress = Callable[[int], None]


class ImageError(XwvmError):
    """A template this worker refuses or cannot get; the message goes into the job's error."""

    status, code = 422, "image_refused"


def verify(desc: TemplateDescription, trusted_keys: Mapping[str, Ed25519PublicKey]) -> None:
    """Raise :class:`ImageError` unless a trusted key signed the template's manifest.

    The manifest is recomputed from the description's own fields (the artifacts' sha256
    included, which every download is checked against), so changing any signed field
    breaks the signature; the description's ``manifest`` string must agree too."""
    label = f"template {desc.name}:{desc.version}"
    manifest = signing.canonical_manifest(desc.to_json())
    if desc.manifest != manifest:
        raise ImageError(f"{label}: its manifest does not match its fields (altered)",
                         code="manifest_mismatch")
    try:
        signing.trusted_signer(manifest, desc.signatures, trusted_keys)
    except signing.Unverified as e:
        if e.code == "unsigned":
            raise ImageError(f"{label} is unsigned: this worker boots only templates signed "
                             "by a key it trusts", code="unsigned_template") from None
        raise ImageError(f"{label} {e.message}", code=e.code) from None


@dataclass(frozen=True)
class Transfer:
    """What getting one artifact cost: ``mode`` is hit, full or incremental."""

    sha256: str
    mode: str
    fetched: int
    reused: int = 0


class _Pin:
    """A shared flock on an artifact's lock file: held while a VM uses the artifact."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)

    def lock(self, mode: int) -> None:
        fcntl.flock(self.fd, mode)

    def try_lock(self, mode: int) -> bool:
        try:
            fcntl.flock(self.fd, mode | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def close(self) -> None:
        os.close(self.fd)


class ImageCache:
    """Content-addressed template artifacts under ``root``, at most ``quota_bytes``.

    ``trusted_keys`` (key id -> public key, see :func:`xwvm.signing.load_trusted`) are
    what :meth:`use` checks every template against before fetching a byte of it."""

    def __init__(self, root: Path, quota_bytes: int,
                 trusted_keys: Mapping[str, Ed25519PublicKey], *,
                 incremental: bool = True) -> None:
        self.root = Path(root)
        self.quota = quota_bytes
        self.trusted_keys = dict(trusted_keys)
        self.incremental = incremental
        self.transfers: list[Transfer] = []
        self.verified = VerifiedFiles()
        for sub in ("blobs", "locks", "chunks", "templates"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    # --- paths -----------------------------------------------------------------------------

    def blob(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256

    def _lock_path(self, sha256: str) -> Path:
        return self.root / "locks" / f"{sha256}.lock"

    def _chunks_path(self, sha256: str) -> Path:
        return self.root / "chunks" / f"{sha256}.json"

    def _record_path(self, uid: str) -> Path:
        return self.root / "templates" / f"{uid}.json"

    # --- the worker's interface ---------------------------------------------------------

    @contextlib.contextmanager
    def use(self, client: Client, desc: TemplateDescription,
            disk_formats: Collection[str] | None = None,
            progress: Progress | None = None) -> Iterator[dict[str, Path]]:
        """Verify ``desc`` (a job's template), fetch what is missing, and
        yield {role: path} of its disk (the first of ``disk_formats`` it has), kernel and
        initrd; the files stay pinned (never evicted) until the block ends."""
        verify(desc, self.trusted_keys)
        try:  # the uid is not signed; the sha256s are, but they become paths too
            check_uid(desc.uid, "template")
            wanted = select_artifacts(desc, disk_formats)
            for a in wanted:
                check_sha256(a.sha256, "artifact")
                if a.size < 0:
                    raise ImageError("an artifact's size is negative", code="bad_size")
        except XwvmError as e:
            raise ImageError(e.message, code=e.code) from None
        pins: list[_Pin] = []
        try:
            paths = {}
            for a in wanted:
                pins.append(self._acquire(client, desc, a, {w.sha256 for w in wanted},
                                          progress))
                paths[a.role] = self.blob(a.sha256)
            with disk_full(CACHE, self.root, f"the record of template {desc.uid}", None, ()):
                self._write_json(self._record_path(desc.uid), {
                    "uid": desc.uid, "name": desc.name, "version": desc.version,
                    "artifacts": [{"role": a.role, "format": a.format, "sha256": a.sha256,
                                   "size": a.size} for a in wanted]})
            yield paths
        finally:
            for pin in pins:
                pin.close()

    def holdings(self) -> list[str]:
        """Uids of the templates whose artifacts are all in the cache."""
        held = []
        for record in sorted((self.root / "templates").glob("*.json")):
            info = self._read_json(record)
            if info and all(self.blob(a["sha256"]).is_file() for a in info["artifacts"]):
                held.append(info["uid"])
        return held

    def size(self) -> int:
        return sum(size for _, _, size in self._entries())

    def evict(self, need: int = 0, keep: Collection[str] = ()) -> list[str]:
        """Remove least recently used artifacts, skipping pinned ones and ``keep``, until
        ``need`` more bytes fit under the quota; the sha256s removed."""
        removed = []
        with self._global_lock():
            entries = sorted(self._entries())
            total = sum(size for _, _, size in entries)
            for _, name, size in entries:
                if total + need <= self.quota:
                    break
                sha = name.removesuffix(".part")
                if sha in keep:
                    continue
                lock = _Pin(self._lock_path(sha))
                try:
                    if not lock.try_lock(fcntl.LOCK_EX):
                        continue  # pinned by a running VM, or being downloaded
                    (self.root / "blobs" / name).unlink(missing_ok=True)
                    if name == sha:
                        self._chunks_path(sha).unlink(missing_ok=True)
                finally:
                    lock.close()
                removed.append(name)
                total -= size
            if total + need > self.quota:
                raise ImageError(f"the image cache cannot hold {need} more bytes: {total} of "
                                 f"its {self.quota} bytes are images in use",
                                 code="cache_full")
        self._drop_stale_records()
        return removed

    # --- fetching ------------------------------------------------------------------------

    def _acquire(self, client: Client, desc: TemplateDescription, a: TemplateArtifact,
                 keep: Collection[str], progress: Progress | None) -> _Pin:
        sha = a.sha256
        pin = _Pin(self._lock_path(sha))
        try:
            while True:
                pin.lock(fcntl.LOCK_SH)
                if self._good(sha):
                    self.verified.touch(self.blob(sha))  # recency for LRU eviction
                    self.transfers.append(Transfer(sha, "hit", 0))
                    return pin
                pin.lock(fcntl.LOCK_EX)  # (drops the shared lock first)
                if self._good(sha):  # another user fetched it meanwhile
                    self.transfers.append(Transfer(sha, "hit", 0))
                else:
                    self.blob(sha).unlink(missing_ok=True)  # planted or damaged bytes
                    part = self.blob(sha).with_name(f"{sha}.part")
                    have = part.stat().st_size if part.exists() else 0
                    with disk_full(CACHE, self.root, f"the {a.role} {sha[:12]}", a.size,
                                   (part, self._chunks_path(sha))):
                        self.evict(max(a.size - have, 0), keep=keep)
                        self.transfers.append(self._fetch(client, desc, a, progress))
                # Downgrade; an evictor may slip into the gap, so look again.
                pin.lock(fcntl.LOCK_SH)
                if self._good(sha):
                    return pin
        except BaseException:
            pin.close()
            raise

    def _good(self, sha: str) -> bool:
        """The blob is there and holds its sha256 (hashed on its first use here)."""
        return self.blob(sha).is_file() and self.verified.check(self.blob(sha), sha)

    def _fetch(self, client: Client, desc: TemplateDescription, a: TemplateArtifact,
               progress: Progress | None) -> Transfer:
        sha = a.sha256
        chunks = None
        if a.role == "disk" and a.chunk_count:
            chunks = _sane_chunks(_api(lambda: client.template_chunks(desc.uid, a.role,
                                                                       a.format)), a.size)
            if chunks is not None:
                self._write_json(self._chunks_path(sha), chunks.to_json())
        base = self._find_base(desc, a, chunks) if chunks and self.incremental else None
        transfer = None
        if base is not None:
            try:
                transfer = self._assemble(client, a, chunks, *base, progress)
            except ImageError as e:  # e.g. a damaged partial file: fetch it whole instead
                if e.code != "checksum_mismatch":
                    raise
        if transfer is None:
            transfer = self._download(client, a, progress)
        os.chmod(self.blob(sha), 0o444)
        self.verified.record(self.blob(sha))
        return transfer

    def _download(self, client: Client, a: TemplateArtifact,
                  progress: Progress | None) -> Transfer:
        """The whole file, resumed and verified; a mismatch is fetched once more afresh
        (a damaged partial file), and a second mismatch means the server's copy is bad."""
        sha = a.sha256
        for attempt in (1, 2):
            try:
                got = client.download(a.path, self.blob(sha), sha256=sha, progress=progress,
                                      size=a.size)
                return Transfer(sha, "full", got)
            except ApiError as e:
                if e.code == "too_large":
                    raise ImageError(f"the server sent more than the signed {a.size} "
                                     f"bytes of the {a.role}: download stopped",
                                     code="too_large") from None
                if e.code != "checksum_mismatch":
                    raise ImageError(f"cannot download {a.role} {sha[:12]}: {e.message}",
                                     code="download_failed") from None
                if attempt == 2:
                    raise ImageError(f"the {a.role} artifact does not match its sha256 "
                                     f"{sha} even after a fresh download: the server's copy "
                                     "is damaged", code="checksum_mismatch") from None
        raise AssertionError("unreachable")

    def _find_base(self, desc: TemplateDescription, a: TemplateArtifact,
                   chunks: ChunkManifest) -> tuple[Path, Sequence[str]] | None:
        """A cached disk of another version of the same template, in the same format and
        chunking, with the most chunks in common."""
        best: tuple[int, Path, Sequence[str]] | None = None
        wanted = set(chunks.chunks)
        for record in (self.root / "templates").glob("*.json"):
            info = self._read_json(record)
            if not info or info["name"] != desc.name or info["uid"] == desc.uid:
                continue
            for old in info["artifacts"]:
                if old["role"] != "disk" or old["format"] != a.format:
                    continue
                old_chunks = _sane_chunks(self._read_json(self._chunks_path(old["sha256"])),
                                          old.get("size"))
                if (old_chunks is None or old_chunks.chunk_size != chunks.chunk_size
                        or not self.blob(old["sha256"]).is_file()):
                    continue
                common = len(wanted.intersection(old_chunks.chunks))
                if common and (best is None or common > best[0]):
                    best = (common, self.blob(old["sha256"]), old_chunks.chunks)
        return None if best is None else (best[1], best[2])

    def _assemble(self, client: Client, a: TemplateArtifact, chunks: ChunkManifest,
                  base: Path, base_chunks: Sequence[str],
                  progress: Progress | None) -> Transfer:
        """Build the new artifact from the base's unchanged chunks and ranges of the
        others (the SDK's ranged reads), checking every chunk and then the whole sha256."""
        sha, size, cs = a.sha256, a.size, chunks.chunk_size
        wanted = chunks.chunks
        where = {c: i for i, c in enumerate(base_chunks)}
        part = self.blob(sha).with_name(f"{sha}.part")
        digest = hashlib.sha256()
        done = 0
        if part.exists():  # resume at the last whole chunk
            done = min(part.stat().st_size // cs, len(wanted))
            with open(part, "r+b") as f:
                f.truncate(done * cs)
                for block in iter(lambda: f.read(BLOCK), b""):
                    digest.update(block)
        fetched = reused = 0
        with open(part, "ab") as out, open(base, "rb") as old:
            i = done
            while i < len(wanted):
                if wanted[i] in where:
                    old.seek(where[wanted[i]] * cs)
                    # No per-chunk check here: the base was verified whole, and the
                    # whole-file sha256 below catches a lying chunk manifest.
                    piece = old.read(min(cs, size - i * cs))
                    digest.update(piece)
                    out.write(piece)
                    reused += len(piece)
                    i += 1
                    continue
                j = i
                while j < len(wanted) and wanted[j] not in where:
                    j += 1
                for k, piece in _ranges(client, a.path, i * cs, min(j * cs, size) - 1, cs):
                    _check_chunk(piece, wanted[i + k], i + k)
                    digest.update(piece)
                    out.write(piece)
                    fetched += len(piece)
                    if progress:
                        progress(len(piece))
                i = j
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != sha:
            part.unlink()
            raise ImageError(f"the assembled {a.role} does not match its sha256 {sha}",
                             code="checksum_mismatch")
        os.replace(part, self.blob(sha))
        return Transfer(sha, "incremental", fetched, reused)

    # --- bookkeeping ---------------------------------------------------------------------

    def _entries(self) -> list[tuple[float, str, int]]:
        """(mtime, name, size) of every blob and partial download (both take disk)."""
        out = []
        for path in (self.root / "blobs").iterdir():
            if len(path.name.removesuffix(".part")) == 64:
                with contextlib.suppress(FileNotFoundError):
                    st = path.stat()
                    out.append((st.st_mtime, path.name, st.st_size))
        return out

    @contextlib.contextmanager
    def _global_lock(self) -> Iterator[None]:
        lock = _Pin(self.root / "locks" / "evict.lock")
        try:
            lock.lock(fcntl.LOCK_EX)
            yield
        finally:
            lock.close()

    def _drop_stale_records(self) -> None:
        for record in (self.root / "templates").glob("*.json"):
            info = self._read_json(record)
            if not info or not any(self.blob(a["sha256"]).is_file()
                                   for a in info["artifacts"]):
                record.unlink(missing_ok=True)

    @staticmethod
    def _write_json(path: Path, doc: Any) -> None:
        tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            tmp.write_text(json.dumps(doc))
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)  # a failed write (a full disk) leaves no piece

    @staticmethod
    def _read_json(path: Path) -> Any:
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            return None


def select_artifacts(desc: TemplateDescription,
                     disk_formats: Collection[str] | None = None) -> list[TemplateArtifact]:
    """The disk (the first format of ``disk_formats`` the template has), kernel, initrd."""
    disks = [a for a in desc.artifacts if a.role == "disk"]
    if disk_formats:
        order = list(disk_formats)
        disks = sorted((a for a in disks if a.format in order),
                       key=lambda a: order.index(a.format))
    if not disks:
        have = ", ".join(a.format for a in desc.artifacts if a.role == "disk") or "none"
        raise ImageError(f"template {desc.name}:{desc.version} has no disk in "
                         f"{', '.join(disk_formats or ())} (it has {have})",
                         code="no_usable_disk")
    return [disks[0]] + [a for a in desc.artifacts if a.role in ("kernel", "initrd")]


def _ranges(client: Client, route: str, start: int, end: int,
            cs: int) -> Iterator[tuple[int, bytes]]:
    """Bytes ``start``..``end`` of ``route`` cut into chunks of ``cs`` bytes (the last may
    be shorter), numbered from 0; read through the SDK's one ranged, size-bounded reader."""
    buf = bytearray()
    k = 0
    try:
        for block in client.read_range(route, start, end):
            buf += block
            while len(buf) >= cs:
                yield k, bytes(buf[:cs])
                del buf[:cs]
                k += 1
    except ApiError as e:
        if e.code == "too_large":
            raise ImageError("the server sent more than the range asked for: "
                             "download stopped", code="too_large") from None
        raise ImageError(f"cannot fetch the template: {e.message}",
                         code="download_failed") from None
    if buf:
        yield k, bytes(buf)


def _sane_chunks(doc: Any, size: Any) -> ChunkManifest | None:
    """The chunk manifest ``doc`` if the worker may follow it: it reads as one, its chunk
    size is bounded (a chunk is held in memory) and it lists exactly as many sha256s as
    the artifact's ``size`` needs; None otherwise (the artifact is then fetched whole)."""
    try:
        manifest = ChunkManifest.from_json(doc)
    except ValueError:
        return None
    return manifest if manifest.covers(size, MAX_CHUNK) else None


def _check_chunk(piece: bytes, expected: str, index: int) -> None:
    if hashlib.sha256(piece).hexdigest() != expected:
        raise ImageError(f"chunk {index} does not match the chunk manifest",
                         code="checksum_mismatch")


def _api(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except ApiError as e:
        raise ImageError(f"cannot fetch the template: {e.message}",
                         code="download_failed") from None
