"""The worker's caches on a full disk (a real small tmpfs, a real server): DiskFull naming
the cache and the bytes, no partial file left behind for a later job to trust, and the
same fetch working once space is back."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.support.processes import ServerProcess
from tests.support.tmpfs import fill, tmpfs
from tests.templates.conftest import MiB, push, random_file, sha
from xwvm import signing
from xwvm.client.sdk import Client
from xwvm.protocol.messages import InputFile, TemplateDescription
from xwvm.protocol.vocab import Fault
from xwvm.worker.cache import DataCache
from xwvm.worker.faults import DiskFull, classify
from xwvm.worker.images import ImageCache


@pytest.fixture(scope="module")
def admin(shared_server: ServerProcess) -> Client:
    return shared_server.client()


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "disk", 24 * 1024) as disk:
        yield disk


def _trusted(key: Ed25519PrivateKey) -> dict[str, object]:
    return {signing.key_id(key.public_key()): key.public_key()}


def _files(root: Path) -> list[str]:
    """The files under ``root`` but the (empty) lock files."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and p.parent.name != "locks")


def _template(admin: Client, key: Ed25519PrivateKey, name: str, version: str,
              files: dict[str, Path]) -> TemplateDescription:
    t = push(admin, name, version, files, key=key)
    return TemplateDescription.from_json(admin.get_template(t["uid"]))


def test_data_cache_on_a_full_disk(admin: Client, small_disk: Path, tmp_path: Path) -> None:
    src = random_file(tmp_path / "input", 2 * MiB)
    data = admin.upload_data(src)
    f = InputFile("input", "in", data["uid"], sha(src), 2 * MiB)
    cache = DataCache(small_disk / "data")
    filler = fill(small_disk, leave=MiB)
    with pytest.raises(DiskFull) as e:
        cache.job_file(admin, f)
    assert e.value.message.startswith(
        f"the worker's data cache is on a full disk: job file {f.sha256[:12]} needs "
        f"{2 * MiB} bytes, ")
    assert e.value.message.endswith(" bytes are free; the partial file was removed")
    assert classify(e.value) == Fault.DISK_FULL and e.value.code == "disk_full"
    assert _files(cache.root) == [], "no partial download is left"
    filler.unlink()
    got = cache.job_file(admin, f)
    assert got == cache.path(f.sha256) and got.read_bytes() == src.read_bytes()


def test_image_download_on_a_full_disk(admin: Client, key: Ed25519PrivateKey,
                                       small_disk: Path, tmp_path: Path) -> None:
    disk, kernel = random_file(tmp_path / "d", 3 * MiB), random_file(tmp_path / "k", 50_000)
    desc = _template(admin, key, "full-disk", "1", {"disk": disk, "kernel": kernel})
    cache = ImageCache(small_disk / "images", 100 * MiB, _trusted(key))
    filler = fill(small_disk, leave=MiB)
    with pytest.raises(DiskFull) as e, cache.use(admin, desc):
        pass
    assert e.value.message.startswith(
        f"the worker's image cache is on a full disk: the disk {sha(disk)[:12]} needs "
        f"{3 * MiB} bytes, ")
    assert classify(e.value) == Fault.DISK_FULL
    assert _files(cache.root) == [], "no partial blob, chunk list or template record is left"
    assert cache.holdings() == []
    filler.unlink()
    with cache.use(admin, desc) as paths:
        assert sha(paths["disk"]) == sha(disk) and sha(paths["kernel"]) == sha(kernel)
    assert [t.mode for t in cache.transfers] == ["full", "full"]
    assert cache.holdings() == [desc.uid]


def test_image_assembly_on_a_full_disk(admin: Client, key: Ed25519PrivateKey,
                                       small_disk: Path, tmp_path: Path) -> None:
    """An incremental update (the new version built from the cached one's chunks) that
    meets a full disk halfway leaves the old version whole and no partial new one."""
    v1 = random_file(tmp_path / "v1", 8 * MiB + 1000)
    content = bytearray(v1.read_bytes())
    content[8 * MiB + 10:8 * MiB + 20] = b"\x42" * 10  # only the last (third) chunk
    v2 = tmp_path / "v2"
    v2.write_bytes(bytes(content))
    d1 = _template(admin, key, "full-incr", "1", {"disk": v1})
    d2 = _template(admin, key, "full-incr", "2", {"disk": v2})
    cache = ImageCache(small_disk / "images", 100 * MiB, _trusted(key))
    with cache.use(admin, d1):
        pass
    before = _files(cache.root)
    filler = fill(small_disk, leave=5 * MiB)
    with pytest.raises(DiskFull) as e, cache.use(admin, d2):
        pass
    assert f"the disk {sha(v2)[:12]} needs {8 * MiB + 1000} bytes" in e.value.message
    assert _files(cache.root) == before, "only the old version's files are there"
    assert sha(cache.blob(sha(v1))) == sha(v1)
    filler.unlink()
    with cache.use(admin, d2) as paths:
        assert hashlib.sha256(paths["disk"].read_bytes()).hexdigest() == sha(v2)
    last = cache.transfers[-1]
    assert (last.mode, last.fetched, last.reused) == ("incremental", 1000, 8 * MiB)
