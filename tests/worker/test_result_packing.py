"""Root never follows the payload's links (issue 13, hole 2), with real processes: the
payload runs as an unprivileged account (``xwvm-test-payload``) exactly as the nested worker runs
it in the guest (uid separation, no bubblewrap), while this test, as root, packs its
results and hands it the next task's directory.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance import isolation, runner
from xwvm.worker import sandbox

SECRET = b"root-only-secret-5d1c"
TEST_USER = "xwvm-test-payload"
@pytest.fixture(autouse=True)
def _root() -> None:
    """Not a skip: CI runs as root; packing as root is what is tested."""
    assert os.geteuid() == 0, "the packing tests run as root (as CI does)"

SWAPPER = """\
import os, sys, time
secret, n = sys.argv[1], 200
names = [f"r{i}.txt" for i in range(n)]
for name in names:
    open(name, "w").write("mine\\n")
if os.fork():
    os._exit(0)   # the payload "ends"; its child keeps swapping while root packs
os.setsid()
end = time.monotonic() + 20
while time.monotonic() < end:
    for name in names:
        try:
            os.symlink(secret, name + ".l")
            os.rename(name + ".l", name)
            open(name + ".f", "w").write("mine\\n")
            os.rename(name + ".f", name)
        except OSError:
            pass
"""


@pytest.fixture(scope="module")
def account() -> isolation.JobAccount:
    """A throw-away account of these tests' own: the guest's reaper kills every process
    of the payload's account, so it must not be one that other workers' jobs use here."""
    return sandbox.job_account(TEST_USER)


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A folder the payload account may pass through (pytest's own are root's 0700)."""
    path = Path(tempfile.mkdtemp(prefix="xwvm-packing-", dir="/var/tmp"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "secret"
    path.write_bytes(SECRET)
    path.chmod(0o600)
    return path


def box_in(tmp_path: Path) -> runner.Sandbox:
    jobs = tmp_path / "jobs"
    jobs.mkdir(exist_ok=True)
    jobs.chmod(0o755)
    box = runner.Sandbox(jobs / "task")
    box.create()
    return box


def test_a_payload_swapping_results_for_links_never_gets_roots_files(
        tmp_path: Path, account: isolation.JobAccount, secret: Path) -> None:
    box = box_in(tmp_path)
    swapper = box.run_dir / "swap.py"
    swapper.write_text(SWAPPER)
    placed = {"swap.py": swapper.stat().st_mtime}
    job = runner.Command([str(swapper), str(secret)], {}, 60)
    iso = isolation.guest_isolation(account.name)
    outcome = runner.run(job, box, Path("/usr/bin/python3"), None, threading.Event(), iso)
    assert outcome.exit_code == 0, box.stderr.read_text()
    time.sleep(0.5)  # the swapper would be at work now, had it survived
    assert isolation.uid_pids(account.uid) == [], "a payload process survived its job"
    archive = runner.pack_results(box, placed, tmp_path / "r.tgz", account.uid)
    assert SECRET not in _all_bytes(archive)


def test_planted_links_fifos_and_hard_links_are_not_packed(
        tmp_path: Path, account: isolation.JobAccount, secret: Path) -> None:
    box = box_in(tmp_path)
    (box.run_dir / "out.txt").write_text("result\n")
    (box.run_dir / "sub").mkdir()
    os.symlink(secret, box.run_dir / "link.txt")
    os.symlink(secret.parent, box.run_dir / "dirlink")
    os.mkfifo(box.run_dir / "fifo")
    os.link(secret, box.run_dir / "hard.txt")  # a guest without protected_hardlinks allows it
    box.give_to(account)
    box.stdout.write_text("")
    box.stderr.write_text("")
    archive = runner.pack_results(box, {}, tmp_path / "r.tgz", account.uid)
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    assert names == {"stdout.txt", "stderr.txt", "out.txt"}, names
    assert SECRET not in _all_bytes(archive)


def test_give_to_changes_no_owner_through_planted_links(
        tmp_path: Path, account: isolation.JobAccount, secret: Path) -> None:
    """The next task's directory holds links a payload planted: give_to hands over the
    directory's own files and nothing a link points at."""
    victim_dir = tmp_path / "etc"
    victim_dir.mkdir()
    victim = victim_dir / "passwd"
    victim.write_text("root:x:0:0::/root:/bin/sh\n")
    box = box_in(tmp_path)
    (box.run_dir / "input.txt").write_text("data\n")
    os.symlink(victim, box.run_dir / "passwd")
    os.symlink(victim_dir, box.run_dir / "etcdir")
    os.symlink(secret, box.run_dir / "deep-link")
    box.give_to(account)
    for path in (victim, victim_dir, secret):
        assert path.stat().st_uid == 0, f"{path} was given to the payload"
    assert (box.run_dir / "input.txt").stat().st_uid == account.uid
    assert box.run_dir.stat().st_uid == account.uid


def test_a_left_behind_process_cannot_plant_links_in_the_next_task(
        tmp_path: Path, account: isolation.JobAccount) -> None:
    """Task 1 leaves a process that waits for task 2's directory and swaps it for one
    holding a link (to have root chown what it points at), as it could when the jobs
    lived in the payload user's home; it is gone before task 2 exists."""
    victim = tmp_path / "victim"
    victim.write_text("root's\n")
    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, account.uid, account.gid)
    first = runner.Sandbox(home / "jobs" / "task1")
    first.create()
    planter = first.run_dir / "plant.sh"
    planter.write_text(f"""\
cd {home}
(setsid sh -c 'end=$(( $(date +%s) + 15 ));
  while [ $(date +%s) -lt $end ]; do
    if [ -d jobs/task2 ] && [ ! -L jobs/task2/run/planted ]; then
      mv jobs jobs.old 2>/dev/null; mkdir -p jobs/task2/run
      ln -s {victim} jobs/task2/run/planted
    fi
  done' </dev/null >/dev/null 2>&1 &)
""")
    iso = isolation.guest_isolation(account.name)
    outcome = runner.run(runner.Command([str(planter)], {}, 30), first,
                         Path("/bin/sh"), None, threading.Event(), iso)
    assert outcome.exit_code == 0, first.stderr.read_text()
    first.remove()
    second = runner.Sandbox(home / "jobs" / "task2")
    second.create()
    time.sleep(1)
    second.give_to(account)
    assert victim.stat().st_uid == 0, "root gave its file to the payload"


def _all_bytes(archive: Path) -> bytes:
    with tarfile.open(archive) as tar:
        return b"".join(tar.extractfile(m).read()  # type: ignore[union-attr]
                        for m in tar.getmembers() if m.isfile())
