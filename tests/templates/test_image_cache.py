"""The worker's image cache against a real server: signature checks before any byte is
fetched, verified and resumed downloads, damaged copies, LRU eviction under a quota that
never touches a pinned image, one download for concurrent users, incremental updates."""

from __future__ import annotations

import base64
import copy
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.support.processes import ServerProcess
from tests.templates.conftest import Keys, MiB, push, random_file, server_blob, sha
from xwvm import signing
from xwvm.client.sdk import Client
from xwvm.protocol.messages import TemplateDescription
from xwvm.worker.images import ImageCache, ImageError, verify


def _desc(c: Client, t: dict[str, Any]) -> TemplateDescription:
    """What the worker gets in its job (the server's description_for_worker)."""
    return TemplateDescription.from_json(c.get_template(t["uid"]))


@pytest.fixture(scope="module")
def signed(admin: Client, keys: Keys, tmp_path_factory: pytest.TempPathFactory
           ) -> tuple[TemplateDescription, Path, Path]:
    root = tmp_path_factory.mktemp("signed")
    disk, kernel = random_file(root / "disk", 3 * MiB + 1), random_file(root / "k", 50_000)
    t = push(admin, "cache-base", "1", {"disk": disk, "kernel": kernel}, key=keys.private)
    return _desc(admin, t), disk, kernel


def test_verify_refuses_tampered_unsigned_and_untrusted(
        signed: tuple[TemplateDescription, Path, Path], keys: Keys) -> None:
    verify(signed[0], keys.trusted)
    desc = signed[0].to_json()
    cases: list[tuple[str, Any]] = []
    t = copy.deepcopy(desc)
    t["cmdline"] += " init=/bin/sh"  # a signed field changed (by a compromised server)
    t["manifest"] = signing.canonical_manifest(t)  # ...and the manifest sent along too
    cases.append(("bad_signature", t))
    t = copy.deepcopy(desc)
    t["artifacts"][0]["sha256"] = "0" * 64
    cases.append(("manifest_mismatch", t))  # fields differ from the manifest sent along
    t = copy.deepcopy(desc)
    sig = bytearray(base64.b64decode(t["signatures"][0]["signature"]))
    sig[5] ^= 1
    t["signatures"][0]["signature"] = base64.b64encode(bytes(sig)).decode()
    cases.append(("bad_signature", t))
    cases.append(("unsigned_template", {**desc, "signatures": []}))
    stranger = Ed25519PrivateKey.generate()
    other = signing.sign(desc["manifest"], stranger)
    cases.append(("untrusted_signature", {**desc, "signatures": [other.to_dict()]}))
    for code, bad in cases:
        with pytest.raises(ImageError) as e:
            verify(TemplateDescription.from_json(bad), keys.trusted)
        assert e.value.code == code, (code, e.value.message)
    with pytest.raises(ImageError) as e:
        verify(signed[0], {})
    assert "does not trust" in e.value.message and keys.key_id in e.value.message


def test_unsigned_template_is_refused_before_download(admin: Client, tmp_path: Path,
                                                      keys: Keys) -> None:
    t = push(admin, "cache-unsigned", "1", {"disk": random_file(tmp_path / "d", 1000)})
    cache = ImageCache(tmp_path / "cache", 10 * MiB, keys.trusted)
    with pytest.raises(ImageError) as e, cache.use(admin, _desc(admin, t)):
        pass
    assert e.value.code == "unsigned_template" and "cache-unsigned:1" in e.value.message
    assert cache.transfers == [] and cache.holdings() == []


def test_download_once_verified_then_hits(signed: tuple[TemplateDescription, Path, Path],
                                          admin: Client, keys: Keys, tmp_path: Path) -> None:
    desc, disk, kernel = signed
    cache = ImageCache(tmp_path / "cache", 10 * MiB, keys.trusted)
    with cache.use(admin, desc) as paths:
        assert paths["disk"].read_bytes() == disk.read_bytes()
        assert paths["kernel"].read_bytes() == kernel.read_bytes()
        assert (paths["disk"].stat().st_mode & 0o222) == 0
    with cache.use(admin, desc):
        pass
    assert [t.mode for t in cache.transfers] == ["full", "full", "hit", "hit"]
    assert cache.holdings() == [desc.uid]
    assert not list((tmp_path / "cache" / "blobs").glob("*.part"))


def test_partial_download_resumes(signed: tuple[TemplateDescription, Path, Path], admin: Client,
                                  keys: Keys, tmp_path: Path) -> None:
    desc, disk, _ = signed
    cache = ImageCache(tmp_path / "cache", 10 * MiB, keys.trusted)
    cache.blob(sha(disk)).with_name(sha(disk) + ".part").write_bytes(
        disk.read_bytes()[:2 * MiB])
    with cache.use(admin, desc) as paths:
        assert paths["disk"].read_bytes() == disk.read_bytes()
    assert cache.transfers[0].fetched == disk.stat().st_size - 2 * MiB


def test_corrupted_partial_file_is_refetched(signed: tuple[TemplateDescription, Path, Path],
                                             admin: Client, keys: Keys, tmp_path: Path) -> None:
    desc, disk, _ = signed
    cache = ImageCache(tmp_path / "cache", 10 * MiB, keys.trusted)
    damaged = bytearray(disk.read_bytes()[:MiB])
    damaged[1000] ^= 0xFF
    cache.blob(sha(disk)).with_name(sha(disk) + ".part").write_bytes(bytes(damaged))
    with cache.use(admin, desc) as paths:
        assert paths["disk"].read_bytes() == disk.read_bytes()
    assert cache.transfers[0].fetched == disk.stat().st_size  # the second, whole fetch


def test_damaged_server_copy_is_refused(shared_server: ServerProcess, admin: Client,
                                        keys: Keys, tmp_path: Path) -> None:
    disk = random_file(tmp_path / "d", 2 * MiB)
    desc = _desc(admin, push(admin, "cache-damaged", "1", {"disk": disk}, key=keys.private))
    blob = server_blob(shared_server, sha(disk))
    blob.chmod(0o644)
    with open(blob, "r+b") as f:
        f.seek(MiB)
        f.write(b"\x00" * 16)
    cache = ImageCache(tmp_path / "cache", 10 * MiB, keys.trusted)
    with pytest.raises(ImageError) as e, cache.use(admin, desc):
        pass
    assert e.value.code == "checksum_mismatch" and "server's copy" in e.value.message
    assert list((tmp_path / "cache" / "blobs").iterdir()) == []
    assert cache.holdings() == []


def test_lru_eviction_under_quota_spares_pinned_images(admin: Client, keys: Keys,
                                                       tmp_path: Path) -> None:
    descs = {n: _desc(admin, push(admin, f"cache-lru-{n}", "1",
                                  {"disk": random_file(tmp_path / n, MiB)}, key=keys.private))
             for n in "abcd"}
    cache = ImageCache(tmp_path / "cache", 2 * MiB + 1000, keys.trusted)

    def use(n: str) -> None:
        with cache.use(admin, descs[n]):
            pass

    use("a")
    use("b")
    use("a")  # a is now more recent than b
    use("c")  # evicts b, the least recently used
    assert sorted(cache.holdings()) == sorted([descs["a"].uid, descs["c"].uid])
    with cache.use(admin, descs["a"]):  # a pinned: d must evict c, though a is older
        use("d")
        assert sorted(cache.holdings()) == sorted([descs["a"].uid, descs["d"].uid])
        small = ImageCache(tmp_path / "cache", MiB + 1000, keys.trusted)
        with pytest.raises(ImageError) as e, small.use(admin, descs["b"]):
            pass  # only d could go, and that is not enough: a is in use
        assert e.value.code == "cache_full"
    assert cache.size() <= cache.quota


def test_concurrent_users_cause_one_download(admin: Client, keys: Keys,
                                             tmp_path: Path) -> None:
    disk = random_file(tmp_path / "d", 8 * MiB)
    desc = _desc(admin, push(admin, "cache-concurrent", "1", {"disk": disk}, key=keys.private))
    # two cache objects on one directory stand for two worker processes
    caches = [ImageCache(tmp_path / "cache", 64 * MiB, keys.trusted) for _ in range(2)]
    barrier = threading.Barrier(4)
    seen: list[bytes] = []
    errors: list[BaseException] = []

    def job(i: int) -> None:
        c = Client(admin.server, admin.verify if isinstance(admin.verify, str) else None,
                   admin.token)
        try:
            barrier.wait()
            with caches[i % 2].use(c, desc) as paths:
                seen.append(paths["disk"].read_bytes()[:64])
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=job, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    transfers = caches[0].transfers + caches[1].transfers
    assert sorted(t.mode for t in transfers) == ["full", "hit", "hit", "hit"]
    assert sum(t.fetched for t in transfers) == 8 * MiB
    assert len(seen) == 4


def test_incremental_update_fetches_only_changed_chunks(admin: Client, keys: Keys,
                                                        tmp_path: Path) -> None:
    v1 = random_file(tmp_path / "v1", 32 * MiB)
    content = bytearray(v1.read_bytes())
    content[13 * MiB + 5:13 * MiB + 100] = b"\x42" * 95  # inside chunk 3 (4 MiB chunks)
    v2 = tmp_path / "v2"
    v2.write_bytes(bytes(content))
    d1 = _desc(admin, push(admin, "cache-incr", "1", {"disk": v1}, key=keys.private))
    d2 = _desc(admin, push(admin, "cache-incr", "2", {"disk": v2}, key=keys.private))
    cache = ImageCache(tmp_path / "cache", 100 * MiB, keys.trusted)
    with cache.use(admin, d1):
        pass
    with cache.use(admin, d2) as paths:
        assert sha(paths["disk"]) == sha(v2)
    last = cache.transfers[-1]
    assert (last.mode, last.fetched, last.reused) == ("incremental", 4 * MiB, 28 * MiB)
    assert sorted(cache.holdings()) == sorted([d1.uid, d2.uid])
