"""Memory exhaustion in the guest is the payload's failure, never a "crashed VM": the agent
protects itself from the OOM killer and makes every payload its first choice. Raising a
score works on real processes here; lowering one needs the guest's real root (this
machine's root lacks CAP_SYS_RESOURCE), so the agent's own score is checked from inside a
real VM by tests/e2e/test_vm_jobs.py's probe payload."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from appliance.agent import protect_from_oom
from appliance.runner import OOM_FIRST, oom_first


def _score(pid: int | str) -> int:
    return int(Path(f"/proc/{pid}/oom_score_adj").read_text())


def test_a_payload_is_the_first_choice_and_what_it_starts_too(tmp_path: Path) -> None:
    # the payload starts a child only once its score was set (a shell builtin loop waits
    # for the flag: no process is forked before): the child inherits the score
    flag = tmp_path / "go"
    proc = subprocess.Popen(["sh", "-c", f'while [ ! -e "{flag}" ]; do :; done; '
                                         "sleep 30 & wait"])
    try:
        assert oom_first(proc.pid)
        assert _score(proc.pid) == OOM_FIRST
        flag.touch()
        kids: list[str] = []
        for _ in range(100):
            kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            if kids:
                break
            time.sleep(0.05)
        assert kids and _score(kids[0]) == OOM_FIRST
    finally:
        proc.kill()
        proc.wait()


def test_a_refused_write_is_said_not_raised(tmp_path: Path) -> None:
    assert protect_from_oom(tmp_path / "no-proc") is False
    assert oom_first(999_999_999, tmp_path) is False
