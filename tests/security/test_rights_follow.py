"""Rights follow a job to its data (issue 12, hole 10), tried as a new user would, through
the real CLI against a real server and worker: ``submit --chmod 700 --input`` made the job
private but left its uploaded input public, and ``chmod 750 JOB`` left its results public."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import appkeys
from tests.support.processes import ServerProcess, WorkerProcess, run_cli

PW = "follow-password-1"


@dataclass
class People:
    """A cms user (alice, who submits), her group mate bob and carol of atlas."""

    alice: Path
    bob: Path
    carol: Path
    tmp: Path

    def cli(self, who: Path, *args: str) -> str:
        return run_cli(list(args), who).stdout

    def js(self, who: Path, *args: str) -> list[dict]:
        return json.loads(self.cli(who, *args, "--format", "json"))

    def can_get(self, who: Path, uid: str) -> bool:
        dest = self.tmp / f"got-{uid}"
        res = run_cli(["data", "get", uid, "-o", str(dest)], who, check=False)
        assert res.returncode == 0 or "no read access" in res.stderr, res.stderr
        return res.returncode == 0

    def can_fetch_results(self, who: Path, job: str) -> bool:
        res = run_cli(["results", job, "-o", str(self.tmp / f"res-{job}")], who, check=False)
        assert res.returncode == 0 or "no read access" in res.stderr, res.stderr
        return res.returncode == 0

    def mode(self, uid: str, who: Path | None = None) -> str:
        rows = self.js(who or self.alice, "data", "list")
        return next(d["access_rights"] for d in rows if d["uid"] == uid)


@pytest.fixture
def people(server: ServerProcess, cli_home: Path, tmp_path: Path) -> People:
    pw = tmp_path / "pw"
    pw.write_text(PW)
    homes = {}
    for group in ("cms", "atlas"):
        run_cli(["group", "add", group], cli_home)
    for login, group in (("alice", "cms"), ("bob", "cms"), ("carol", "atlas")):
        run_cli(["user", "add", login, "--group", group, "--password-file", str(pw)],
                cli_home)
        homes[login] = tmp_path / f"home-{login}"
        run_cli(["login", "--server", server.url, "--ca", str(server.ca), "--user", login,
                 "--password-file", str(pw)], homes[login])
    script = tmp_path / "copy.sh"
    script.write_text("#!/bin/sh\ntr a-z A-Z < data.txt > out.txt\n")
    run_cli(["app", "send", "copy", "--file", str(script), "--sign-key",
             str(appkeys.private_key())], cli_home)
    return People(homes["alice"], homes["bob"], homes["carol"], tmp_path)


def _input_of(people: People, before: set[str]) -> str:
    [uid] = [d["uid"] for d in people.js(people.alice, "data", "list")
             if d["uid"] not in before and d["name"] == "data.txt"]
    return uid


def _run(people: People, *extra: str) -> tuple[dict, str]:
    """Alice submits a job with a local input and waits: (the job, its input's id)."""
    data = people.tmp / "data.txt"
    data.write_text("alice's input\n")
    before = {d["uid"] for d in people.js(people.alice, "data", "list")}
    [job] = people.js(people.alice, "submit", "copy", "--input", str(data), "--wait",
                      "--timeout", "90", *extra)
    assert job["status"] == "COMPLETED", job
    return job, _input_of(people, before | {job["result"]})


def test_private_work_stays_private_and_chmod_carries(people: People) -> None:
    worker = WorkerProcess(people.tmp, people.tmp / "alice.cred", "w-alice")
    people.cli(people.alice, "worker", "enroll", "-o", str(worker.credential))
    worker.start()
    try:
        # `--chmod 700`: the work is alice's alone, its uploaded input and results too.
        job, inp = _run(people, "--chmod", "700")
        result = job["result"]
        assert (job["access_rights"], people.mode(inp), people.mode(result)) == \
            ("700", "700", "700")
        for other in (people.bob, people.carol):
            assert not people.can_get(other, inp)
            assert not people.can_get(other, result)
            assert not people.can_fetch_results(other, job["uid"])
        # `chmod 750 JOB`: her group reads the work and its results; atlas does not. The
        # input is never loosened with the job (it may be a private file of hers).
        people.cli(people.alice, "chmod", "750", job["uid"])
        assert (people.mode(inp), people.mode(result)) == ("700", "750")
        assert people.can_get(people.bob, result) and not people.can_get(people.bob, inp)
        assert people.can_fetch_results(people.bob, job["uid"])
        assert not people.can_get(people.carol, inp)
        assert not people.can_get(people.carol, result)
        assert not people.can_fetch_results(people.carol, job["uid"])

        # The audit's second case: a public job's results, then `chmod 750 JOB`.
        job, inp = _run(people)
        assert people.can_get(people.carol, job["result"])  # 755: anyone, as asked
        people.cli(people.alice, "chmod", "750", job["uid"])
        assert not people.can_get(people.carol, job["result"])
        assert not people.can_get(people.carol, inp)
        assert not people.can_fetch_results(people.carol, job["uid"])
        assert people.can_get(people.bob, job["result"])
    finally:
        worker.stop()


def test_chmod_of_a_job_leaves_shared_and_set_apart_data_alone(people: People) -> None:
    """What follows a job: data its owner uploaded for it alone. Not data another job also
    reads, not another user's data, and not data whose rights the owner set apart."""
    tmp = people.tmp
    for name in ("shared.txt", "bobs.txt", "secret.txt", "mine.txt", "data.txt"):
        (tmp / name).write_text(f"{name}\n")
    [shared] = people.js(people.alice, "data", "send", str(tmp / "shared.txt"))
    [bobs] = people.js(people.bob, "data", "send", str(tmp / "bobs.txt"))
    [secret] = people.js(people.alice, "data", "send", str(tmp / "secret.txt"),
                         "--chmod", "700")
    [mine] = people.js(people.alice, "data", "send", str(tmp / "mine.txt"), "--chmod", "700")

    def held(*args: str) -> str:
        return people.js(people.alice, "submit", "copy", "--hold", *args)[0]["uid"]

    both = [held("--input-data", shared["uid"]) for _ in range(2)]
    with_bobs = held("--input-data", bobs["uid"])
    with_secret = held("--input-data", secret["uid"])
    # the review's case: her own 700 file, given to a 700 job that she then publishes
    private_job = held("--chmod", "700", "--input-data", mine["uid"])
    before = {d["uid"] for d in people.js(people.alice, "data", "list")}
    own = held("--input", str(tmp / "data.txt"), "--input-data", shared["uid"])
    uploaded = _input_of(people, before)

    for job in (both[0], with_bobs, own):
        people.cli(people.alice, "chmod", "700", job)
    people.cli(people.alice, "chmod", "777", with_secret)
    people.cli(people.alice, "chmod", "755", private_job)
    assert people.mode(shared["uid"]) == "755"  # other jobs read it
    assert people.mode(bobs["uid"], people.bob) == "755"  # bob's, not alice's to change
    assert people.mode(secret["uid"]) == "700"  # set apart: never loosened with the job
    assert people.mode(mine["uid"]) == "700"  # never published by a job's chmod
    assert not people.can_get(people.carol, mine["uid"])
    assert people.mode(uploaded) == "700"  # uploaded for `own` alone: follows it
    assert not people.can_get(people.carol, uploaded)
    assert people.can_get(people.carol, shared["uid"])
