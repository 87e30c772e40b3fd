"""A template artifact's chunk manifest, typed: read once, its chunking bounded and its
count checked against the artifact's signed size before a worker follows it."""

from __future__ import annotations

from typing import Any

import pytest

from xwvm.protocol.messages import ChunkManifest

SHA = "a" * 64
MANIFEST = ChunkManifest(chunk_size=4, chunks=("b" * 64, "c" * 64, "d" * 64), role="disk",
                         format="raw", size=10, sha256=SHA)


def test_round_trip_and_the_servers_form() -> None:
    assert ChunkManifest.from_json(MANIFEST.to_json()) == MANIFEST
    server = {"role": "disk", "format": "raw", "size": 10, "sha256": SHA, "chunk_size": 4,
              "chunks": list(MANIFEST.chunks), "from_the_future": 1}
    assert ChunkManifest.from_json(server) == MANIFEST


def test_the_chunking_alone_is_enough() -> None:
    """A cached manifest (or a terse server) carries only the chunking."""
    got = ChunkManifest.from_json({"chunk_size": 4, "chunks": ["e" * 64]})
    assert (got.chunk_size, got.chunks, got.role, got.size) == (4, ("e" * 64,), None, None)


@pytest.mark.parametrize(("doc", "field"), [
    ({"chunks": []}, "chunks.chunk_size: missing"),
    ({"chunk_size": None, "chunks": []}, "chunks.chunk_size: expected an integer"),
    ({"chunk_size": True, "chunks": []}, "chunks.chunk_size: expected an integer"),
    ({"chunk_size": 4}, "chunks.chunks: missing"),
    ({"chunk_size": 4, "chunks": None}, "chunks.chunks: expected an array"),
    ({"chunk_size": 4, "chunks": ["x", 7]}, "chunks.chunks[1]: expected a string"),
    ({"chunk_size": 4, "chunks": [], "size": "10"}, "chunks.size: expected an integer"),
])
def test_a_malformed_manifest_is_named(doc: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError) as e:
        ChunkManifest.from_json(doc)
    assert str(e.value).startswith(field)


def test_not_an_object() -> None:
    with pytest.raises(ValueError, match="expected an object"):
        ChunkManifest.from_json(["chunk_size", 4])


@pytest.mark.parametrize(("chunk_size", "count", "size", "max_chunk", "ok"), [
    (4, 3, 10, 16, True),
    (4, 3, 12, 16, True),
    (4, 0, 0, 16, True),
    (4, 2, 10, 16, False),      # too few for the size
    (4, 4, 10, 16, False),      # too many
    (32, 1, 10, 16, False),     # a chunk larger than the reader holds
    (0, 0, 0, 16, False),
    (-4, 0, 0, 16, False),
    (4, 3, "10", 16, False),    # the artifact's size is not a count
    (4, 3, None, 16, False),
    (4, 1, True, 16, False),
    (4, 0, -1, 16, False),
])
def test_covers(chunk_size: int, count: int, size: object, max_chunk: int, ok: bool) -> None:
    m = ChunkManifest(chunk_size=chunk_size, chunks=("f" * 64,) * count)
    assert m.covers(size, max_chunk) is ok
