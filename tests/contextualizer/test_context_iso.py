"""Tests of the context ISO: determinism, round trip, real readers (blkid, cloud-init), refusals."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pycdlib
import pytest
from ctx_testdata import job_spec, user_doc

from contextualizer import (
    IsoReadError,
    Limits,
    Mode,
    NetworkPolicy,
    UnsupportedFormatError,
    build_iso,
    build_job_context,
    read_iso,
    write_iso,
)
from contextualizer.iso import pack_files, unpack_files
from contextualizer.seed import render_seed

TESTS = Path(__file__).parent
BUILD_IN_CHILD = (
    "import hashlib, sys\n"
    "sys.path.insert(0, sys.argv[1])\n"
    "from ctx_testdata import job_spec, user_doc\n"
    "from contextualizer import build_iso, build_job_context\n"
    "iso = build_iso(build_job_context(user_doc(), job_spec()))\n"
    "print(hashlib.sha256(iso).hexdigest())\n"
)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_same_context_same_bytes_in_process(ctx) -> None:
    first = build_iso(ctx)
    time.sleep(1.1)  # pycdlib stamps seconds: a clock leak would show now
    assert sha256(build_iso(ctx)) == sha256(first)


def test_same_context_same_bytes_across_processes_and_time_zones(ctx) -> None:
    digests = []
    for tz in ("UTC", "Asia/Tokyo"):
        env = {**os.environ, "TZ": tz}
        result = subprocess.run(
            [sys.executable, "-c", BUILD_IN_CHILD, str(TESTS)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=True,
        )
        digests.append(result.stdout.strip())
        time.sleep(1.1)
    assert digests[0] == digests[1] == sha256(build_iso(ctx))


def test_dates_are_pinned(ctx) -> None:
    iso = build_iso(ctx)
    pvd = 16 * 2048
    assert iso[pvd + 813 : pvd + 830] == b"2000010100000000\x00"  # creation
    assert iso[pvd + 830 : pvd + 847] == b"2000010100000000\x00"  # modification


def test_different_context_different_bytes(ctx) -> None:
    assert build_iso(ctx) != build_iso(replace(ctx, job_uid="another-job"))


def test_round_trip_bytes(ctx) -> None:
    assert read_iso(build_iso(ctx)) == ctx


def test_round_trip_file_is_private(ctx, tmp_path: Path) -> None:
    path = write_iso(ctx, tmp_path / "context.iso")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_iso(path) == ctx
    assert read_iso(str(path)) == ctx
    assert path.read_bytes() == build_iso(ctx)


def test_round_trip_pilot_without_network(ctx) -> None:
    pilot = build_job_context(
        {"network": "internet"},
        job_spec(
            mode=Mode.PILOT,
            network=NetworkPolicy.NONE,
            limits=Limits(
                wall_clock_seconds=86400, cpus=4, memory_mb=4096, disk_mb=20000, idle_seconds=600
            ),
        ),
    )
    back = read_iso(build_iso(pilot))
    assert back == pilot
    assert back.mode is Mode.PILOT and back.network is NetworkPolicy.NONE
    assert back.limits.idle_seconds == 600


def test_layout_read_by_pycdlib(ctx) -> None:
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(build_iso(ctx)))
    try:
        assert iso.pvd.volume_identifier.rstrip() == b"CIDATA"
        assert iso.has_rock_ridge() and iso.has_joliet()
        rr = {(d, tuple(sorted(f))) for d, _, f in iso.walk(rr_path="/")}
        assert rr == {
            ("/", ("meta-data", "network-config", "user-data")),
            ("/xwvm", ("context.json",)),
        }
        joliet = {(d, tuple(sorted(f))) for d, _, f in iso.walk(joliet_path="/")}
        assert joliet == rr
        plain = {(d, tuple(sorted(f))) for d, _, f in iso.walk(iso_path="/")}
        assert plain == {
            ("/", ("META_DAT.;1", "NETWORK_.;1", "USER_DAT.;1")),
            ("/XWVM", ("CONTEXT.JSO;1",)),
        }
    finally:
        iso.close()


def test_blkid_sees_a_cidata_iso9660_volume(ctx, blkid: str, tmp_path: Path) -> None:
    path = write_iso(ctx, tmp_path / "context.iso")
    result = subprocess.run(
        [blkid, "-p", "-o", "export", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    fields = dict(line.split("=", 1) for line in result.stdout.split() if "=" in line)
    assert fields["LABEL"] == "CIDATA"
    assert fields["TYPE"] == "iso9660"


NOCLOUD_PROBE = """
import json, sys
from cloudinit.helpers import Paths
from cloudinit.sources.DataSourceNoCloud import DataSourceNoCloud
from cloudinit.net import network_state
root = sys.argv[1]
paths = Paths({"cloud_dir": root + "/cloud", "run_dir": root + "/run"})
ds = DataSourceNoCloud(sys_cfg={"datasource": {"NoCloud": {"fs_label": None}}},
                       distro=None, paths=paths)
found = ds._get_data()
ns = network_state.parse_net_config_data(ds.network_config)
print(json.dumps({
    "found": found,
    "instance_id": ds.get_instance_id(),
    "hostname": ds.get_hostname().hostname,
    "user_data": ds.userdata_raw.decode(),
    "interfaces": [i["name"] for i in ns.iter_interfaces()],
}))
"""


@pytest.mark.parametrize("policy", ["server", "none"])
def test_cloud_init_nocloud_datasource_reads_the_iso(
    ctx, policy: str, cloud_init_python: str, tmp_path: Path
) -> None:
    """cloud-init's own NoCloud datasource reads the files we put on the volume."""
    ctx = replace(ctx, network=NetworkPolicy(policy))
    seed = tmp_path / "cloud" / "seed" / "nocloud"
    seed.mkdir(parents=True)
    for name, data in unpack_files(build_iso(ctx)).items():
        (seed / name).parent.mkdir(parents=True, exist_ok=True)
        (seed / name).write_bytes(data)
    result = subprocess.run(
        [cloud_init_python, "-c", NOCLOUD_PROBE, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["found"] is True
    assert seen["instance_id"] == ctx.job_uid
    assert seen["hostname"] == ctx.hostname
    assert seen["user_data"].startswith("#cloud-config\n")
    assert seen["interfaces"] == ([] if policy == "none" else ["nic0"])


# --- refusals -------------------------------------------------------------------------------


def test_refuses_wrong_label(ctx) -> None:
    iso = pack_files(render_seed(ctx), label="CONFIG2")
    with pytest.raises(IsoReadError, match="not a NoCloud context volume") as err:
        read_iso(iso)
    assert err.value.issues[0].path == "volume label"
    assert "CONFIG2" in str(err.value)


def test_accepts_lowercase_label(ctx) -> None:
    assert read_iso(pack_files(render_seed(ctx), label="cidata")) == ctx


@pytest.mark.parametrize("missing", ["meta-data", "user-data", "xwvm/context.json"])
def test_refuses_missing_file(ctx, missing: str) -> None:
    files = render_seed(ctx)
    del files[missing]
    with pytest.raises(IsoReadError, match="incomplete") as err:
        read_iso(pack_files(files))
    assert [i.path for i in err.value.issues] == [f"/{missing}"]


def test_network_config_is_optional(ctx) -> None:
    files = render_seed(ctx)
    del files["network-config"]
    assert read_iso(pack_files(files)) == ctx


@pytest.mark.parametrize("fmt", [2, 0, "1", None])
def test_refuses_unsupported_format(ctx, fmt: object) -> None:
    files = render_seed(ctx)
    doc = json.loads(files["xwvm/context.json"])
    doc["format"] = fmt
    files["xwvm/context.json"] = json.dumps(doc).encode()
    with pytest.raises(UnsupportedFormatError, match=r"supports formats \[1\]") as err:
        read_iso(pack_files(files))
    assert err.value.issues[0].path == "$.format"


def test_refuses_bad_context_json(ctx) -> None:
    files = render_seed(ctx)
    doc = json.loads(files["xwvm/context.json"])
    doc["limits"]["cpus"] = "many"
    doc["job"]["mode"] = "batch"
    doc["extra"] = True
    files["xwvm/context.json"] = json.dumps(doc).encode()
    with pytest.raises(IsoReadError) as err:
        read_iso(pack_files(files))
    assert {i.path for i in err.value.issues} == {"$.limits.cpus", "$.job.mode", "$.extra"}


def test_refuses_invalid_json_and_yaml(ctx) -> None:
    files = render_seed(ctx)
    with pytest.raises(IsoReadError, match="not valid JSON"):
        read_iso(pack_files({**files, "xwvm/context.json": b"{not json"}))
    with pytest.raises(IsoReadError, match="not a #cloud-config"):
        read_iso(pack_files({**files, "user-data": b"#!/bin/sh\necho hi\n"}))
    with pytest.raises(IsoReadError, match="meta-data is not valid YAML"):
        read_iso(pack_files({**files, "meta-data": b"instance-id: [unclosed\n"}))


def test_refuses_instance_id_mismatch(ctx) -> None:
    files = render_seed(ctx)
    files["meta-data"] = b"instance-id: some-other-job\n"
    with pytest.raises(IsoReadError, match="disagree"):
        read_iso(pack_files(files))


def test_refuses_non_iso(tmp_path: Path) -> None:
    with pytest.raises(IsoReadError, match="not an ISO 9660 volume"):
        read_iso(b"\0" * 64 * 1024)
    junk = tmp_path / "junk.iso"
    junk.write_bytes(os.urandom(40000))
    with pytest.raises(IsoReadError):
        read_iso(junk)


def test_user_doc_fixture_is_valid() -> None:
    from contextualizer import validate_user_context

    assert validate_user_context(user_doc()) == []
