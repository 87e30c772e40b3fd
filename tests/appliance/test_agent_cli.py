"""`xwvm worker nested`, the in-VM agent's entry point, on the host: what it refuses
before any payload runs, and how it says so (exit status and console line)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from contextualizer import JobSpec, Limits, NetworkPolicy, Payload, build_job_context
from tests.support.processes import XWVM


def nested(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*XWVM, "worker", "nested", *args], capture_output=True, text=True,
                          timeout=60)


def test_a_missing_or_bad_context_is_refused(tmp_path: Path) -> None:
    missing = nested("--context", str(tmp_path / "none.json"))
    assert missing.returncode == 2 and "cannot use the context" in missing.stdout
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": 999}))
    refused = nested("--context", str(bad))
    assert refused.returncode == 2 and "cannot use the context" in refused.stdout


def test_offline_context_without_its_exchange_disk_is_refused(tmp_path: Path) -> None:
    ctx = build_job_context({}, JobSpec(
        job_uid="j-off", owner="alice", app="base", server_url="https://xwvm-server:443",
        server_ca_pem="ca", credential="secret", payload=Payload(command="true"),
        limits=Limits(wall_clock_seconds=60, cpus=1, memory_mb=256, disk_mb=1),
        network=NetworkPolicy.NONE))
    path = tmp_path / "context.json"
    path.write_text(json.dumps(ctx.to_document()))
    (tmp_path / "sys/class/block").mkdir(parents=True)
    (tmp_path / "dev").mkdir()
    out = nested("--context", str(path), "--root", str(tmp_path))
    assert out.returncode == 2, out.stdout + out.stderr
    assert "no exchange disk for job j-off" in out.stdout
    assert "secret" not in out.stdout + out.stderr
