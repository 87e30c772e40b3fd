"""The README's five-minute tour, run as written (in a fresh folder, on a free port): a
newcomer's first commands must work. The block is read from README.md itself, so the test
fails when the docs and the software part ways."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _tour() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## A five-minute tour", 1)[1]
    return re.search(r"```\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_readme_tour_runs_as_written(tmp_path: Path) -> None:
    port = _free_port()
    script = _tour().replace("127.0.0.1:4322", f"127.0.0.1:{port}")
    script = script.replace("export PATH=$PWD/.venv/bin:$PATH", "")
    # The tour waits for the server by hand; here: until it answers.
    script = script.replace("&\n\n# 2.", f"&\nfor i in $(seq 100); do curl -sk "
                            f"https://127.0.0.1:{port}/api/v1/health >/dev/null && break; "
                            "sleep 0.2; done\n\n# 2.")
    script = script.replace("xwvm results <UID>",
                            'xwvm results "$(xwvm works --format csv | tail -1 | cut -d, -f1)"')
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "XWVM_CONFIG_DIR": str(tmp_path / "config")}
    log = tmp_path / "tour.log"  # a file: the server and worker keep their output open
    with open(log, "w") as f:
        proc = subprocess.Popen(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path,
                                env=env, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        proc.wait(timeout=300)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and the worker it started
    out = log.read_text()
    assert proc.returncode == 0, out
    result = (tmp_path / "out" / "stdout.txt").read_text()
    assert result.splitlines() == ["hello arg1 arg2", "10"], (result, out)
