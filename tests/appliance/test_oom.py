"""Memory exhaustion in the guest is the payload's failure, never a "crashed VM": the agent
protects itself from the OOM killer and makes every payload its first choice. Raising a
score works on real processes here; lowering one needs the guest's real root (this
machine's root lacks CAP_SYS_RESOURCE), so the agent's own score is checked from inside a
real VM by tests/e2e/test_vm_jobs.py's probe payload."""

from __future__ import annotations

import subprocess
from pathlib import Path

from appliance.agent import protect_from_oom
from appliance.runner import OOM_FIRST, oom_first


def _score(pid: int | str) -> int:
    return int(Path(f"/proc/{pid}/oom_score_adj").read_text())


def test_a_payload_is_the_first_choice_and_what_it_starts_too() -> None:
    # the payload starts a child a second later: it inherits the score the agent set
    proc = subprocess.Popen(["sh", "-c", "sleep 1; sleep 30 & wait"])
    try:
        assert oom_first(proc.pid)
        assert _score(proc.pid) == OOM_FIRST
        for _ in range(50):
            kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            if kids:
                break
            subprocess.run(["sleep", "0.1"], check=True)
        assert kids and _score(kids[0]) == OOM_FIRST
    finally:
        proc.kill()
        proc.wait()


def test_a_refused_write_is_said_not_raised(tmp_path: Path) -> None:
    assert protect_from_oom(tmp_path / "no-proc") is False
    assert oom_first(999_999_999, tmp_path) is False
