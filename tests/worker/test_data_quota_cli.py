"""`xwvm worker run --data-quota`: the owner's cap on cached job files reaches the cache. A
job whose input alone is larger than the cap is not run (and its bytes never fill the
volunteer's disk), through the real CLI against a real server."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support import appkeys
from tests.support.processes import ServerProcess, run_cli


def test_an_input_larger_than_the_data_quota_is_not_cached(server: ServerProcess,
                                                           cli_home: Path,
                                                           tmp_path: Path) -> None:
    tool = tmp_path / "tool.sh"
    tool.write_text("#!/bin/sh\nwc -c < big.bin\n")
    run_cli(["app", "send", "counter", "--file", str(tool), "--sign-key",
             str(appkeys.private_key())], cli_home)
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * (3 * 2**20))
    out = run_cli(["submit", "counter", "--input", str(big), "--format", "json"], cli_home)
    [uid] = [j["uid"] for j in json.loads(out.stdout)]
    cred = tmp_path / "w.cred"
    run_cli(["worker", "enroll", "-o", str(cred)], cli_home)
    run = run_cli(["worker", "run", "--credential", str(cred), "--work-dir",
                   str(tmp_path / "wd"), "--hypervisor", "none", "--trusted-key",
                   str(appkeys.public_key()), "--data-quota", "1", "--max-jobs", "1",
                   "--max-idle", "20"], cli_home, timeout=120)
    done = server.client().get_work(uid)
    assert done["status"] == "ERROR", (done, run.stdout + run.stderr)
    assert "larger than the data cache's quota of 1048576 bytes" in done["error"], done
    cache = tmp_path / "wd" / "cache"
    cached = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file()) \
        if cache.exists() else 0
    assert cached <= 2**20
    refusal = run_cli(["worker", "run", "--credential", str(cred), "--work-dir",
                       str(tmp_path / "wd"), "--data-quota", "0"], cli_home, check=False)
    assert refusal.returncode != 0 and "--data-quota" in refusal.stderr
