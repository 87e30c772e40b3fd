"""The exchange disk's format (a wire format: the worker and the guest both import it).

Every VM job gets one: the outer worker writes a raw disk per job and the hypervisor
attaches it writable beside the overlay; the guest finds it by its header (any bus:
virtio ``vdb`` under libvirt, SATA ``sdb`` under VirtualBox, see appliance.exchange).
A network=none job's inputs come in on it and its results archive goes back on it; in
every network mode the guest writes its verdict there (the payload's exit code, why it
could not run, whether it uploaded the results to the server itself), which the worker
reads after the guest powered off: the one path from the guest's payload to the worker.

Layout (all offsets from the start of the disk; the file is sparse)::

    0            header: MAGIC, then the layout as JSON, NUL-padded to HEADER_SIZE
    HEADER_SIZE  the input files, each at a 4 KiB boundary (offset, length, sha256)
    R            the results header (RESULTS_MAGIC + JSON), RESULTS_HEADER bytes,
                 written last by the guest, so a guest that died half-way leaves none
    R + 4 KiB    the results archive (results.tar.gz), at most ``capacity`` bytes
                 (0 when the guest uploads the results to the server itself)

Both sides check everything they read: the job uid, the format, that every region
lies inside the disk, the sha256 of every input and of the archive. Standard library
only (it goes into VM images).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from xwvm.protocol.vocab import EXIT_CODE_MAX, EXIT_CODE_MIN, Fault

FORMAT = 1
MAGIC = b"XWVM-EXCHANGE\n"
RESULTS_MAGIC = b"XWVM-RESULTS\n"
HEADER_SIZE = 64 * 1024
RESULTS_HEADER = 4096
ALIGN = 4096
DISK_ALIGN = 1 << 20   # whole MiB: what every hypervisor attaches (VMDK counts sectors)
COPY_CHUNK = 1 << 20
DEFAULT_RESULTS_CAPACITY = 1 << 30  # sparse: costs nothing until the guest writes
MAX_OFFSET = 1 << 62  # far beyond any disk; keeps every seek and sum an ordinary int


class ExchangeError(Exception):
    """The exchange disk is missing, foreign, damaged, or its contents do not verify."""

    code = "bad_exchange_disk"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NoVerdict(ExchangeError):
    """The VM powered off without writing a verdict: its agent never got to it (QEMU or
    the guest's kernel died under it), which is no payload's doing."""


@dataclass(frozen=True)
class InputSlot:
    name: str      # relative path in the payload's run dir
    offset: int
    length: int
    sha256: str


@dataclass(frozen=True)
class Layout:
    job_uid: str
    inputs: tuple[InputSlot, ...]
    results_offset: int
    results_capacity: int  # bytes available to the archive

    @property
    def size(self) -> int:
        return _align(self.results_offset + RESULTS_HEADER + self.results_capacity,
                      DISK_ALIGN)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "job": self.job_uid,
                "inputs": [{"name": i.name, "offset": i.offset, "length": i.length,
                            "sha256": i.sha256} for i in self.inputs],
                "results": {"offset": self.results_offset,
                            "capacity": self.results_capacity}}

    @classmethod
    def from_json(cls, doc: Any, disk_size: int | None = None) -> Layout:
        try:
            fmt = doc["format"]
            if type(fmt) is not int or fmt != FORMAT:
                shown = fmt if type(fmt) is int else type(fmt).__name__
                raise ExchangeError(f"exchange disk format {shown} is not {FORMAT}: "
                                    "worker and appliance disagree")
            inputs = tuple(InputSlot(name=check_name(_str(i["name"], "name")),
                                     offset=_offset(i["offset"], "offset"),
                                     length=_offset(i["length"], "length"),
                                     sha256=_str(i["sha256"], "sha256"))
                           for i in _list(doc["inputs"]))
            layout = cls(job_uid=_str(doc["job"], "job"), inputs=inputs,
                         results_offset=_offset(doc["results"]["offset"], "offset"),
                         results_capacity=_offset(doc["results"]["capacity"], "capacity"))
        except (KeyError, TypeError, ValueError) as e:
            raise ExchangeError(f"exchange disk header is malformed: {e!r}") from None
        layout.check(disk_size)
        return layout

    def check(self, disk_size: int | None) -> None:
        end = HEADER_SIZE
        for slot in self.inputs:
            if slot.offset < end or slot.length < 0:
                raise ExchangeError(f"input {slot.name!r} overlaps another region")
            end = slot.offset + slot.length
        if self.results_offset < end or self.results_capacity < 0:
            raise ExchangeError("the results region overlaps the inputs")
        if disk_size is not None and disk_size < self.results_offset + RESULTS_HEADER:
            raise ExchangeError(f"exchange disk is {disk_size} bytes, smaller than its "
                                "own layout (truncated?)")


@dataclass(frozen=True)
class Results:
    """The guest's verdict on its payload."""

    exit_code: int | None
    message: str
    archive: Path | None  # None: not on the disk (uploaded, or the payload could not run)
    uploaded: bool = False  # the guest uploaded the results archive to the server itself
    # The results could not be delivered because the server was unreachable until the
    # deadline (the only fault a guest sees): the worker gives the job back.
    fault: Fault | None = None


def check_name(name: str) -> str:
    """A job file name as the payload sees it: relative, no ``..``, no empty parts."""
    path = PurePosixPath(name)
    if not name or path.is_absolute() or any(p in ("", ".", "..") for p in name.split("/")):
        raise ExchangeError(f"input name {name!r} is not a plain relative path")
    return str(path)


def _int(value: Any, what: str, low: int, high: int) -> int:
    """A number the other side wrote: an int (not a bool, not a float) in [low, high]."""
    if type(value) is not int or not low <= value <= high:
        raise ValueError(f"{what} is not an integer in [{low}, {high}]")
    return value


def _offset(value: Any, what: str) -> int:
    """An offset, length or capacity: a non-negative int a seek accepts."""
    return _int(value, what, 0, MAX_OFFSET)


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} is not a string")
    return value


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError("inputs is not a list")
    return value


def _exit_code(value: Any) -> int | None:
    """The payload's exit code: None, or an int a report accepts (signed 32 bits)."""
    return None if value is None else _int(value, "exit_code", EXIT_CODE_MIN, EXIT_CODE_MAX)


def _align(n: int, to: int = ALIGN) -> int:
    return (n + to - 1) // to * to


def read_header(f: BinaryIO, offset: int, size: int, magic: bytes) -> dict[str, Any] | None:
    f.seek(offset)
    block = f.read(size)
    if not block.startswith(magic):
        return None
    text = block[len(magic):].split(b"\0", 1)[0]
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as e:  # RecursionError: nested too deep
        raise ExchangeError(f"exchange disk header is not JSON: {type(e).__name__}") \
            from None
    if not isinstance(doc, dict):
        raise ExchangeError("exchange disk header is not a JSON object")
    return doc


def _write_block(f: BinaryIO, offset: int, size: int, magic: bytes, doc: dict) -> None:
    data = magic + json.dumps(doc, sort_keys=True).encode()
    if len(data) > size:
        raise ExchangeError(f"exchange header of {len(data)} bytes does not fit in {size} "
                            "(too many inputs?)")
    f.seek(offset)
    f.write(data.ljust(size, b"\0"))


def _copy(src: BinaryIO, dst: BinaryIO, length: int) -> str:
    """Copy ``length`` bytes; returns their sha256."""
    digest, left = hashlib.sha256(), length
    while left:
        chunk = src.read(min(COPY_CHUNK, left))
        if not chunk:
            raise ExchangeError(f"exchange disk ends {left} bytes early (truncated?)")
        digest.update(chunk)
        dst.write(chunk)
        left -= len(chunk)
    return digest.hexdigest()


def _size(f: BinaryIO) -> int:
    return f.seek(0, os.SEEK_END)


# --- the worker's side ---------------------------------------------------------------------

def create(path: Path, job_uid: str, inputs: Iterable[tuple[str, Path, str]],
           results_capacity: int = DEFAULT_RESULTS_CAPACITY) -> Layout:
    """Write the exchange disk for ``job_uid`` with ``(name, file, sha256)`` inputs."""
    slots, sources, offset = [], [], HEADER_SIZE
    for name, src, sha in inputs:
        length = Path(src).stat().st_size
        slots.append(InputSlot(check_name(name), offset, length, sha))
        sources.append(Path(src))
        offset = _align(offset + length)
    layout = Layout(job_uid, tuple(slots), _align(offset, DISK_ALIGN), results_capacity)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "r+b") as f:
        _write_block(f, 0, HEADER_SIZE, MAGIC, layout.to_json())
        for slot, src in zip(slots, sources, strict=True):
            f.seek(slot.offset)
            with src.open("rb") as s:
                if _copy(s, f, slot.length) != slot.sha256:
                    raise ExchangeError(f"input {slot.name!r} changed while it was copied")
        f.truncate(layout.size)
    return layout


def read_results(path: Path, job_uid: str, dest: Path) -> Results:
    """The guest's verdict from a powered-off VM's exchange disk, its archive (if any)
    copied to ``dest`` and verified. ExchangeError when there is none or it does not
    verify."""
    with Path(path).open("rb") as f:
        layout = read_layout(f, job_uid)
        doc = read_header(f, layout.results_offset, RESULTS_HEADER, RESULTS_MAGIC)
        if doc is None:
            raise NoVerdict("the VM powered off without writing results to its "
                            "exchange disk")
        verdict, length, sha = _verdict(doc, job_uid)
        if sha is None:
            return verdict
        if not 0 <= length <= layout.results_capacity:
            raise ExchangeError(f"results of {length} bytes exceed the exchange disk's "
                                f"capacity of {layout.results_capacity}")
        f.seek(layout.results_offset + RESULTS_HEADER)
        with Path(dest).open("wb") as out:
            got = _copy(f, out, length)
    if got != sha:
        Path(dest).unlink(missing_ok=True)
        raise ExchangeError("the results archive on the exchange disk does not match its "
                            f"sha256 ({got} != {sha})")
    return Results(verdict.exit_code, verdict.message, Path(dest))


def _verdict(doc: dict[str, Any], job_uid: str) -> tuple[Results, int, str | None]:
    """(the verdict without its archive, the archive's length, its sha256 or None)."""
    try:
        if doc["job"] != job_uid:
            raise ExchangeError("results on the exchange disk are for another job")
        length, sha = _offset(doc["length"], "length"), doc["sha256"]
        exit_code = _exit_code(doc["exit_code"])
        message = doc.get("message")
        uploaded = doc.get("uploaded") is True
        fault = _guest_fault(doc.get("fault"))
        if sha is not None:
            _str(sha, "sha256")
        if message is not None:
            _str(message, "message")
    except (KeyError, TypeError, ValueError) as e:
        raise ExchangeError(f"results header is malformed: {e}") from None
    message = message or ""
    if sha is None and not uploaded and not message:
        message = "the guest wrote no results"
    return Results(exit_code, message, None, uploaded and sha is None,
                   fault if sha is None and not uploaded else None), length, sha


def _guest_fault(value: Any) -> Fault | None:
    """A verdict's fault: absent, or the one a guest can see (the server unreachable)."""
    if value is None:
        return None
    if value != Fault.SERVER:
        raise ValueError(f"fault: a guest may only name {Fault.SERVER}")
    return Fault.SERVER


def read_layout(f: BinaryIO, job_uid: str) -> Layout:
    doc = read_header(f, 0, HEADER_SIZE, MAGIC)
    if doc is None:
        raise ExchangeError("not an xwvm exchange disk (no header)")
    layout = Layout.from_json(doc, _size(f))
    if layout.job_uid != job_uid:
        raise ExchangeError(f"exchange disk is for job {layout.job_uid}, not {job_uid}")
    return layout


# --- the guest's side (appliance.exchange finds the disk) ---------------------------------

def extract_inputs(device: Path, job_uid: str, dest_dir: Path) -> list[Path]:
    """Copy every input into ``dest_dir`` (verified); returns the files written."""
    written = []
    with Path(device).open("rb") as f:
        layout = read_layout(f, job_uid)
        for slot in layout.inputs:
            target = dest_dir / slot.name
            target.parent.mkdir(parents=True, exist_ok=True)
            f.seek(slot.offset)
            with target.open("wb") as out:
                got = _copy(f, out, slot.length)
            if got != slot.sha256:
                raise ExchangeError(f"input {slot.name!r} on the exchange disk does not "
                                    "match its sha256")
            written.append(target)
    return written


def write_results(device: Path, job_uid: str, archive: Path | None, exit_code: int | None,
                  message: str, uploaded: bool = False, fault: Fault | None = None) -> None:
    """The guest's verdict: the results archive, then its header (last), flushed to the
    disk. ``archive`` None: no results here, because ``uploaded`` (to the server, by the
    guest itself) or because the payload could not run (``message`` says why). An archive
    larger than the disk's capacity is replaced by that reason (ExchangeError raised after).
    """
    length, sha, too_big = 0, None, None
    with Path(device).open("r+b") as f:
        layout = read_layout(f, job_uid)
        if archive is not None:
            length = Path(archive).stat().st_size
            if length > layout.results_capacity:
                too_big = (f"results of {length} bytes exceed the exchange disk's capacity "
                           f"of {layout.results_capacity} bytes")
                length, message = 0, too_big
            else:
                f.seek(layout.results_offset + RESULTS_HEADER)
                with Path(archive).open("rb") as src:
                    sha = _copy(src, f, length)
                _sync(f)
        _write_block(f, layout.results_offset, RESULTS_HEADER, RESULTS_MAGIC,
                     {"format": FORMAT, "job": job_uid, "length": length, "sha256": sha,
                      "exit_code": exit_code, "message": message,
                      "uploaded": bool(uploaded and archive is None),
                      "fault": None if fault is None else str(fault)})
        _sync(f)
    if too_big:
        raise ExchangeError(too_big)


def _sync(f: BinaryIO) -> None:
    f.flush()
    os.fsync(f.fileno())
