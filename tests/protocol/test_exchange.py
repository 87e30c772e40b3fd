"""The exchange disk of VM jobs, both sides on real files: the worker writes inputs, the
guest side (the same functions the in-VM agent calls, on a file standing in for its
block device) reads them and writes its verdict and results, the worker reads those back. Every
damage a disk can suffer is refused with a reason, and nothing unverified is returned."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from appliance.exchange import find_device
from xwvm.protocol import exchange
from xwvm.protocol.exchange import ExchangeError
from xwvm.protocol.vocab import Fault

JOB = "job-1"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def inputs(tmp_path: Path, files: dict[str, bytes]) -> list[tuple[str, Path, str]]:
    out = []
    for n, (name, data) in enumerate(files.items()):
        src = tmp_path / f"in{n}"
        src.write_bytes(data)
        out.append((name, src, sha(data)))
    return out


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    path = tmp_path / "exchange.img"
    exchange.create(path, JOB, inputs(tmp_path, {
        "data.txt": b"x" * 5000, "sub/dir/events.root": bytes(range(256)) * 40,
        "empty": b""}), results_capacity=1 << 20)
    return path


def test_round_trip_inputs_in_results_out(disk: Path, tmp_path: Path) -> None:
    assert disk.stat().st_size % exchange.DISK_ALIGN == 0
    assert disk.stat().st_blocks * 512 < disk.stat().st_size  # sparse
    run = tmp_path / "run"
    run.mkdir()
    written = exchange.extract_inputs(disk, JOB, run)
    assert sorted(p.relative_to(run).as_posix() for p in written) == \
        ["data.txt", "empty", "sub/dir/events.root"]
    assert (run / "data.txt").read_bytes() == b"x" * 5000
    assert (run / "sub/dir/events.root").read_bytes() == bytes(range(256)) * 40
    archive = tmp_path / "results.tar.gz"
    archive.write_bytes(b"pretend-tarball" * 1000)
    exchange.write_results(disk, JOB, archive, 3, "exit 3")
    got = exchange.read_results(disk, JOB, tmp_path / "back.tgz")
    assert (got.exit_code, got.message) == (3, "exit 3")
    assert got.archive is not None and got.archive.read_bytes() == archive.read_bytes()


def test_no_results_written_says_so(disk: Path, tmp_path: Path) -> None:
    with pytest.raises(ExchangeError, match="without writing results"):
        exchange.read_results(disk, JOB, tmp_path / "r.tgz")
    assert not (tmp_path / "r.tgz").exists()


def test_a_refusal_travels_without_an_archive(disk: Path, tmp_path: Path) -> None:
    exchange.write_results(disk, JOB, None, None, "guest hardening check failed: sudo")
    got = exchange.read_results(disk, JOB, tmp_path / "r.tgz")
    assert got.archive is None and got.exit_code is None
    assert got.message == "guest hardening check failed: sudo"


def test_a_verdict_only_disk_says_the_guest_uploaded_the_results(tmp_path: Path) -> None:
    """network=server/internet: no inputs, no room for an archive; the guest uploaded the
    results itself and leaves the exit code and whether it did here."""
    small = tmp_path / "verdict.img"
    layout = exchange.create(small, JOB, [], results_capacity=0)
    assert small.stat().st_size == layout.size <= 2 * exchange.DISK_ALIGN
    exchange.write_results(small, JOB, None, 7, "exit 7", uploaded=True)
    got = exchange.read_results(small, JOB, tmp_path / "r.tgz")
    assert (got.exit_code, got.message, got.archive, got.uploaded) == (7, "exit 7", None, True)
    exchange.write_results(small, JOB, None, None, "")
    got = exchange.read_results(small, JOB, tmp_path / "r.tgz")
    assert (got.uploaded, got.message) == (False, "the guest wrote no results")


def test_results_larger_than_the_capacity_are_replaced_by_the_reason(
        disk: Path, tmp_path: Path) -> None:
    big = tmp_path / "big.tgz"
    big.write_bytes(b"\0" * ((1 << 20) + 1))
    with pytest.raises(ExchangeError, match="exceed the exchange disk's capacity"):
        exchange.write_results(disk, JOB, big, 0, "")
    got = exchange.read_results(disk, JOB, tmp_path / "r.tgz")
    assert got.archive is None and "exceed" in got.message


def test_tampered_results_are_refused_and_not_returned(disk: Path, tmp_path: Path) -> None:
    archive = tmp_path / "results.tar.gz"
    archive.write_bytes(b"a" * 10000)
    exchange.write_results(disk, JOB, archive, 0, "")
    layout = exchange.read_layout(disk.open("rb"), JOB)
    with disk.open("r+b") as f:
        f.seek(layout.results_offset + exchange.RESULTS_HEADER + 5000)
        f.write(b"b")
    dest = tmp_path / "r.tgz"
    with pytest.raises(ExchangeError, match="does not match its sha256"):
        exchange.read_results(disk, JOB, dest)
    assert not dest.exists()


def test_tampered_input_is_refused(disk: Path, tmp_path: Path) -> None:
    layout = exchange.read_layout(disk.open("rb"), JOB)
    with disk.open("r+b") as f:
        f.seek(layout.inputs[0].offset)
        f.write(b"y")
    with pytest.raises(ExchangeError, match="'data.txt' on the exchange disk does not match"):
        exchange.extract_inputs(disk, JOB, tmp_path)


def test_another_jobs_disk_is_refused_on_both_sides(disk: Path, tmp_path: Path) -> None:
    with pytest.raises(ExchangeError, match="is for job job-1, not job-2"):
        exchange.extract_inputs(disk, "job-2", tmp_path)
    with pytest.raises(ExchangeError, match="is for job job-1, not job-2"):
        exchange.read_results(disk, "job-2", tmp_path / "r.tgz")


def test_truncated_and_foreign_disks_are_refused(disk: Path, tmp_path: Path) -> None:
    with disk.open("r+b") as f:
        f.truncate(exchange.HEADER_SIZE + 100)
    with pytest.raises(ExchangeError, match="truncated"):
        exchange.extract_inputs(disk, JOB, tmp_path)
    foreign = tmp_path / "foreign.img"
    foreign.write_bytes(b"\0" * (1 << 20))
    with pytest.raises(ExchangeError, match="not an xwvm exchange disk"):
        exchange.read_results(foreign, JOB, tmp_path / "r.tgz")


@pytest.mark.parametrize("damage, message", [
    (lambda d: {**d, "format": 99}, "format 99"),
    (lambda d: {k: v for k, v in d.items() if k != "results"}, "malformed"),
    (lambda d: {**d, "inputs": [{**d["inputs"][0], "name": "../../etc/passwd"}]},
     "not a plain relative path"),
    (lambda d: {**d, "inputs": [{**d["inputs"][0], "offset": 0}]}, "overlaps"),
    (lambda d: {**d, "results": {"offset": 100, "capacity": 10}}, "overlaps the inputs"),
])
def test_damaged_headers_are_refused(disk: Path, tmp_path: Path, damage: object,
                                     message: str) -> None:
    with disk.open("rb") as f:
        doc = json.loads(f.read(exchange.HEADER_SIZE)[len(exchange.MAGIC):].split(b"\0")[0])
    with disk.open("r+b") as f:
        f.write((exchange.MAGIC + json.dumps(damage(doc)).encode())  # type: ignore[operator]
                .ljust(exchange.HEADER_SIZE, b"\0"))
    with pytest.raises(ExchangeError, match=message):
        exchange.extract_inputs(disk, JOB, tmp_path)


@pytest.mark.parametrize("name", ["", "/abs", "a/../b", "a//b", "./a"])
def test_bad_input_names_are_refused_by_the_worker(tmp_path: Path, name: str) -> None:
    with pytest.raises(ExchangeError, match="not a plain relative path"):
        exchange.create(tmp_path / "x.img", JOB, inputs(tmp_path, {name: b"1"}))


def test_too_many_inputs_for_the_header_are_refused(tmp_path: Path) -> None:
    many = inputs(tmp_path, {f"{'n' * 200}{i}": b"" for i in range(400)})
    with pytest.raises(ExchangeError, match="does not fit"):
        exchange.create(tmp_path / "x.img", JOB, many)


def test_the_guest_finds_its_disk_among_others(disk: Path, tmp_path: Path) -> None:
    """find_device over a /sys/class/block and /dev laid out as the guest kernel does:
    the root disk, its partition, another job's exchange disk, and ours."""
    sys_block, dev = tmp_path / "sys", tmp_path / "dev"
    for name in ("vda", "vda1", "vdb", "vdc", "sr0"):
        (sys_block / name).mkdir(parents=True)
    (sys_block / "vda1" / "partition").write_text("1\n")
    dev.mkdir()
    (dev / "vda").write_bytes(b"\0" * 4096)
    exchange.create(dev / "vdb", "other-job", [])
    (dev / "vdc").symlink_to(disk)
    assert find_device(JOB, sys_block, dev) == dev / "vdc"
    with pytest.raises(ExchangeError, match=r"no exchange disk for job job-9; found .*vdb"):
        find_device("job-9", sys_block, dev)


def test_results_lost_to_an_outage_name_the_servers_fault_and_nothing_else(
        tmp_path: Path) -> None:
    """The guest's one fault: the server unreachable until its deadline. The worker then
    gives the job back instead of ending it; any other fault a guest names is refused (a
    guest must not steer the host's circuit breaker), and a verdict with results or an
    upload carries none."""
    small = tmp_path / "verdict.img"
    exchange.create(small, JOB, [], results_capacity=0)
    exchange.write_results(small, JOB, None, 0, "the results were not delivered: ...",
                           fault=Fault.SERVER)
    got = exchange.read_results(small, JOB, tmp_path / "r.tgz")
    assert (got.fault, got.uploaded, got.archive) == (Fault.SERVER, False, None)
    exchange.write_results(small, JOB, None, 0, "done", uploaded=True, fault=Fault.SERVER)
    assert exchange.read_results(small, JOB, tmp_path / "r.tgz").fault is None
    for claim in ("hypervisor", "disk_full", 1, ["server"]):
        with small.open("rb") as f:
            layout = exchange.read_layout(f, JOB)
            raw = f.seek(layout.results_offset) and f.read(exchange.RESULTS_HEADER)
        doc = json.loads(raw[len(exchange.RESULTS_MAGIC):].split(b"\0")[0])
        with small.open("r+b") as f:
            f.seek(layout.results_offset)
            f.write((exchange.RESULTS_MAGIC + json.dumps({**doc, "fault": claim}).encode())
                    .ljust(exchange.RESULTS_HEADER, b"\0"))
        with pytest.raises(ExchangeError, match="fault"):
            exchange.read_results(small, JOB, tmp_path / "r.tgz")
