"""A hostile guest (root in its VM) writes what it likes to its exchange disk: the outer
worker's reader refuses it with ExchangeError, never with another exception (which would
escape the worker's pull loop and kill the worker, then the next one the job goes to)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from xwvm.protocol import exchange as ex

UID = "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a8b"


def _disk(tmp_path: Path, capacity: int = 1 << 20) -> tuple[Path, ex.Layout]:
    disk = tmp_path / "exchange.img"
    return disk, ex.create(disk, UID, [], results_capacity=capacity)


def _write_results_header(disk: Path, layout: ex.Layout, raw: bytes) -> None:
    with disk.open("r+b") as f:
        f.seek(layout.results_offset)
        f.write(ex.RESULTS_MAGIC + raw + b"\0")


def _verdict_doc(**changes: Any) -> bytes:
    doc = {"format": ex.FORMAT, "job": UID, "length": 0, "sha256": None, "exit_code": 0,
           "message": "", "uploaded": True, **changes}
    return json.dumps(doc).encode()


@pytest.mark.parametrize("raw", [
    b"[" * 4000,                                  # RecursionError in json.loads
    b'{"a":' * 3000 + b"1" + b"}" * 3000,
    b'{"job":"%s","length":1e400,"sha256":"x","exit_code":0}' % UID.encode(),  # inf
    _verdict_doc(length=1e400, sha256="0" * 64),
    _verdict_doc(length=10 ** 30, sha256="0" * 64),
    _verdict_doc(length=True, sha256="0" * 64),
    _verdict_doc(length=-1, sha256="0" * 64),
    _verdict_doc(length="12", sha256="0" * 64),
    _verdict_doc(exit_code=True),
    _verdict_doc(exit_code=2 ** 31),
    _verdict_doc(exit_code=-2 ** 31 - 1),
    _verdict_doc(exit_code=1.5),
    _verdict_doc(exit_code=10 ** 400),
    _verdict_doc(sha256=7),
    b"\xff\xfe not utf-8",
], ids=["deep-list", "deep-object", "inf-raw", "inf-length", "huge-length", "bool-length",
        "negative-length", "string-length", "bool-exit", "exit-2^31", "exit-below-int32",
        "float-exit", "exit-10^400", "sha-not-str", "not-utf8"])
def test_a_tampered_verdict_is_an_exchange_error(tmp_path: Path, raw: bytes) -> None:
    disk, layout = _disk(tmp_path)
    _write_results_header(disk, layout, raw)
    with pytest.raises(ex.ExchangeError):
        ex.read_results(disk, UID, tmp_path / "out.tgz")
    assert not (tmp_path / "out.tgz").exists()


@pytest.mark.parametrize("exit_code", [0, 1, 255, -9, 2 ** 31 - 1, -2 ** 31, None])
def test_exit_codes_in_the_signed_32_bit_range_are_read(tmp_path: Path,
                                                        exit_code: int | None) -> None:
    disk, layout = _disk(tmp_path)
    _write_results_header(disk, layout, _verdict_doc(exit_code=exit_code))
    got = ex.read_results(disk, UID, tmp_path / "out.tgz")
    assert got.exit_code == exit_code and got.uploaded


def _rewrite_layout(disk: Path, change: Any) -> None:
    with disk.open("r+b") as f:
        doc = ex.read_header(f, 0, ex.HEADER_SIZE, ex.MAGIC)
        assert doc is not None
        change(doc)
        f.seek(0)
        f.write((ex.MAGIC + json.dumps(doc).encode()).ljust(ex.HEADER_SIZE, b"\0"))


def _set_results(key: str, value: Any) -> Any:
    return lambda doc: doc["results"].__setitem__(key, value)


def _one_input(key: str, value: Any) -> Any:
    slot = {"name": "in.txt", "offset": ex.HEADER_SIZE, "length": 1, "sha256": "0" * 64}
    return lambda doc: doc.__setitem__("inputs", [{**slot, key: value}])


@pytest.mark.parametrize("change", [
    _set_results("offset", 1e400), _set_results("offset", 10 ** 30),
    _set_results("offset", True), _set_results("offset", float(ex.HEADER_SIZE)),
    _set_results("capacity", 1e400), _set_results("capacity", "1"),
    _one_input("offset", 2 ** 70), _one_input("offset", 1e400),
    _one_input("length", 2 ** 70), _one_input("length", False), _one_input("name", ["x"]),
    lambda doc: doc.__setitem__("inputs", 5),
    lambda doc: doc.__setitem__("results", []),
], ids=["inf-offset", "huge-offset", "bool-offset", "float-offset", "inf-capacity",
        "string-capacity", "huge-input-offset", "inf-input-offset", "huge-input-length",
        "bool-input-length", "list-name", "inputs-not-a-list", "results-not-an-object"])
def test_a_tampered_layout_is_an_exchange_error_on_both_sides(tmp_path: Path,
                                                               change: Any) -> None:
    disk, _ = _disk(tmp_path)
    _rewrite_layout(disk, change)
    with pytest.raises(ex.ExchangeError):
        ex.read_results(disk, UID, tmp_path / "out.tgz")
    with pytest.raises(ex.ExchangeError):
        ex.extract_inputs(disk, UID, tmp_path / "run")
