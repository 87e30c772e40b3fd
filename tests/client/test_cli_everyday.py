"""Everyday use of the CLI (issue 23): jobs named by id or xw:// URI everywhere, names where
they resolve, downloads into folders, output formats, and errors a user can act on. One
real server and one real native worker for the module."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import tarfile
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import appkeys
from tests.support.processes import ServerProcess, WorkerProcess, run_cli

SCRIPT = '#!/bin/sh\nfor f in "$@"; do echo "$f" > "$f.txt"; done\necho done\n'


@dataclass
class Grid:
    server: ServerProcess
    admin: Path  # the admin's config dir
    bob: Path  # a standard user's
    tmp: Path

    def cli(self, *args: str, home: Path | None = None, cwd: Path | None = None) -> str:
        return run_cli(list(args), home or self.admin, cwd=cwd).stdout

    def js(self, *args: str, home: Path | None = None) -> list[dict]:
        return json.loads(self.cli(*args, "--format", "json", home=home))

    def fails(self, *args: str, home: Path | None = None, code: int = 1,
              cwd: Path | None = None) -> str:
        res = run_cli(list(args), home or self.admin, check=False, cwd=cwd)
        assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
        assert "Traceback" not in res.stderr, res.stderr
        return res.stdout + res.stderr

    def job(self, *args: str, home: Path | None = None) -> dict:
        [job] = json.loads(self.cli("submit", "touch", "--wait", "--timeout", "90",
                                    "--format", "json", "--", *args, home=home))
        assert job["status"] == "COMPLETED", job
        return job


def login(server: ServerProcess, home: Path, user: str, password_file: Path) -> Path:
    run_cli(["login", "--server", server.url, "--ca", str(server.ca), "--user", user,
             "--password-file", str(password_file)], home)
    return home


@pytest.fixture(scope="module")
def grid(shared_server: ServerProcess,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Grid]:
    tmp = tmp_path_factory.mktemp("everyday")
    admin = login(shared_server, tmp / "admin", "admin", shared_server.password_file)
    pw = tmp / "bob.pw"
    pw.write_text("bob-password-123")
    [bob] = json.loads(run_cli(["user", "add", "bob", "--password-file", str(pw),
                                "--format", "json"], admin).stdout)
    assert bob["login"] == "bob" and bob["rights"] == "standard"
    (tmp / "touch.sh").write_text(SCRIPT)
    run_cli(["app", "send", "touch", "--file", str(tmp / "touch.sh"), "--chmod", "755",
             "--sign-key", str(appkeys.private_key())], admin)
    cred = tmp / "worker.cred"
    run_cli(["worker", "enroll", "--public", "-o", str(cred)], admin)
    worker = WorkerProcess(tmp, cred, "w0").start()
    try:
        yield Grid(shared_server, admin, login(shared_server, tmp / "bob", "bob", pw), tmp)
    finally:
        worker.stop()


def test_a_wait_that_times_out_names_the_jobs(grid: Grid) -> None:
    out = grid.fails("submit", "touch", "--hold", "--count", "2", "--wait", "--timeout", "1")
    rows = [line.split()[0] for line in out.splitlines()[1:3]]
    assert len(rows) == 2 and all(uuid.UUID(r) for r in rows), out
    assert "timed out after 1 s waiting for 2 job(s), which go on" in out
    assert f"follow them with 'xwvm works {rows[0]} {rows[1]}'" in out
    assert {w["status"] for w in grid.js("works", *rows)} == {"WAITING"}
    grid.cli("abort", *rows)


def test_counts_and_sizes_are_checked_by_the_cli(grid: Grid) -> None:
    before = len(grid.js("works"))
    assert "'--count': 0 is not in the range x>=1" in grid.fails("submit", "touch", "--count",
                                                                  "0", code=2)
    assert "'--min-memory': -5 is not in the range x>=0" in grid.fails(
        "submit", "touch", "--min-memory", "-5", code=2)
    assert len(grid.js("works")) == before, "nothing submitted"


def test_data_get_into_a_folder_and_nothing_half_written(grid: Grid) -> None:
    src = grid.tmp / "table.csv"
    src.write_text("a,b\n1,2\n")
    [data] = grid.js("data", "send", str(src))
    into = grid.tmp / "into"
    into.mkdir()
    grid.cli("data", "get", data["uid"], "-o", str(into))
    assert (into / "table.csv").read_text() == "a,b\n1,2\n"
    here = grid.tmp / "here"
    here.mkdir()
    assert "table.csv: 8 bytes" in grid.cli("data", "get", data["uri"], "-o", ".", cwd=here)
    assert (here / "table.csv").read_text() == "a,b\n1,2\n"
    # into a folder, the data's name (its owner's choice) never replaces a file of yours
    (here / "table.csv").write_text("mine")
    assert "exists" in grid.fails("data", "get", data["uid"], "-o", ".", cwd=here)
    assert (here / "table.csv").read_text() == "mine"
    grid.cli("data", "get", data["uid"], "-o", str(here / "table.csv"))  # named: replaced
    assert (here / "table.csv").read_text() == "a,b\n1,2\n"
    blocked = grid.tmp / "blocked"
    (blocked / "table.csv" / "inside").mkdir(parents=True)  # a folder where the file goes
    grid.fails("data", "get", data["uid"], "-o", str(blocked))
    assert sorted(p.name for p in blocked.rglob("*")) == ["inside", "table.csv"], \
        "no .part file left"


def test_results_replace_an_earlier_extraction_and_never_mix(grid: Grid) -> None:
    first, second = grid.job("alpha"), grid.job("beta")
    out = grid.tmp / "res"
    grid.cli("results", first["uid"], "-o", str(out))
    assert (out / "alpha.txt").is_file()
    [row] = grid.js("results", second["uri"], "-o", str(out))
    assert row == {"uid": second["uid"], "path": str(out), "files": row["files"]}
    assert (out / "beta.txt").is_file() and not (out / "alpha.txt").exists(), \
        "no stale file of the earlier job"
    (out / "mine.txt").write_text("my notes")
    msg = grid.fails("results", first["uid"], "-o", str(out))
    assert "holds files that earlier results did not put there (mine.txt)" in msg
    assert (out / "beta.txt").is_file() and (out / "mine.txt").is_file()
    other = grid.tmp / "other"
    other.mkdir()
    (other / "paper.tex").write_text("x")
    assert "is not empty: give a new or empty folder" in grid.fails(
        "results", first["uid"], "-o", str(other))
    assert [p.name for p in grid.tmp.iterdir() if ".new-" in p.name or ".old-" in p.name] \
        == [], "no temporary folder left"


def test_works_of_an_unknown_or_unreadable_job_fail(grid: Grid) -> None:
    ghost = str(uuid.uuid4())
    assert f"no such job (or not readable): {ghost}" in grid.fails("works", ghost)
    job = grid.job("private")
    grid.cli("chmod", "700", job["uid"])
    msg = grid.fails("works", job["uid"], ghost, home=grid.bob)
    assert f"no such job (or not readable): {job['uid']}, {ghost}" in msg
    assert "is not a UUID" in grid.fails("works", "not-a-uid")


def test_xw_uris_are_accepted_everywhere_and_their_host_checked(grid: Grid) -> None:
    [held] = grid.js("submit", "touch", "--hold")
    uri = held["uri"]
    assert [w["uid"] for w in grid.js("works", uri)] == [held["uid"]]
    assert grid.js("release", uri)[0]["status"] in ("PENDING", "RUNNING", "COMPLETED")
    grid.cli("chmod", "750", uri)
    foreign = f"xw://elsewhere.example.org/{held['uid']}"
    for args in (["works", foreign], ["abort", foreign], ["rm", foreign],
                 ["chmod", "700", foreign], ["results", foreign, "-o", "x"],
                 ["data", "get", foreign, "-o", "x"], ["context", "show", foreign]):
        msg = grid.fails(*args)
        assert "names an object of server elsewhere.example.org" in msg, (args, msg)
    assert "an xw:// URI is xw://SERVER/UID" in grid.fails("works", "xw://nothing")
    [removed] = grid.js("rm", uri)
    assert removed == {"uid": held["uid"], "kind": "job", "removed": True}


def test_names_resolve_for_data_contexts_and_chmod(grid: Grid) -> None:
    grid.cli("context", "create", "mine-ctx", "--env", "A=1")
    shown = json.loads(grid.cli("context", "show", "mine-ctx", "--format", "json"))
    assert shown["name"] == "mine-ctx"
    [changed] = grid.js("chmod", "750", "mine-ctx")
    assert (changed["uid"], changed["kind"], changed["access_rights"]) == \
        (shown["uid"], "context", "750")
    src = grid.tmp / "twice.txt"
    src.write_text("x")
    a, b = grid.js("data", "send", str(src)), grid.js("data", "send", str(src))
    msg = grid.fails("chmod", "700", "twice.txt")
    assert "twice.txt names several objects: data " in msg
    assert a[0]["uid"] in msg and b[0]["uid"] in msg
    assert "you have 2 data objects named twice.txt" in grid.fails(
        "data", "rm", "twice.txt")
    assert "no data of yours is named twice.txt" in grid.fails(
        "data", "get", "twice.txt", "-o", str(grid.tmp), home=grid.bob)
    grid.cli("context", "rm", "mine-ctx")


def test_formats_everywhere_and_xml_nests(grid: Grid) -> None:
    job = grid.job("run")
    root = ET.fromstring(grid.cli("works", job["uid"], "--format", "xml"))
    work = root.find("work")
    assert work is not None
    assert [i.text for i in work.findall("args/item")] == ["run"]
    assert work.findtext("pilot") == "false" and work.findtext("env") == ""
    [unmatched] = grid.js("submit", "touch", "--min-memory", "999999999")  # waits on
    for args, status in ((["hold"], "WAITING"), (["release"], "PENDING"),
                         (["abort"], "ABORTED")):
        rows = list(csv.DictReader(io.StringIO(grid.cli(*args, unmatched["uid"], "--format",
                                                        "csv"))))
        assert rows == [{"uid": unmatched["uid"], "status": status}], (args, rows)
    [changed] = list(csv.DictReader(io.StringIO(grid.cli("chmod", "750", job["uid"],
                                                         "--format", "csv"))))
    assert changed == {"uid": job["uid"], "kind": "job", "access_rights": "750"}
    assert ET.fromstring(grid.cli("template", "list", "--format", "xml")).tag == "xwvm"
    assert grid.cli("template", "list", "--format", "csv").startswith("uid,name,version")


def test_tables_show_names_and_owners(grid: Grid) -> None:
    job = grid.job("named", home=grid.bob)
    lines = grid.cli("works").splitlines()  # the admin sees everyone's jobs
    header = lines[0].split()
    assert header[:4] == ["uid", "status", "owner", "app"]
    mine = next(line.split() for line in lines if line.startswith(job["uid"]))
    assert mine[2:4] == ["bob", "touch"] and mine[-1] == "w0"
    src = grid.tmp / "owned.txt"
    src.write_text("y")
    [data] = grid.js("data", "send", str(src), home=grid.bob)
    row = next(line.split() for line in grid.cli("data", "list").splitlines()
               if line.startswith(data["uid"]))
    assert row[1:3] == ["owned.txt", "bob"]


def test_messages_name_the_cli_and_the_rights_levels(grid: Grid) -> None:
    assert "give --object OBJECT: only super users read the whole log" in grid.fails(
        "events", home=grid.bob)
    pw = grid.tmp / "carol.pw"
    pw.write_text("carol-password-123")
    msg = grid.fails("user", "add", "carol", "--rights", "admin", "--password-file", str(pw),
                     code=2)
    assert "'admin' is not one of 'standard', 'worker', 'vworker', 'group_admin', 'super'" \
        in msg
    assert "standard|worker|vworker|group_admin|super" in grid.cli("user", "add", "--help")
    assert "carol" not in {u["login"] for u in grid.js("user", "list")}


def test_the_user_guide_sdk_example_runs_the_readme_hello(grid: Grid) -> None:
    """The guide's SDK example, run as written (only the server, CA and login put in),
    with the README's hello app: COMPLETED, and its output in the results."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert "echo \"hello $*\"; wc -l < data.txt" in readme
    work = grid.tmp / "sdk"
    work.mkdir()
    (work / "hello.sh").write_text('#!/bin/sh\necho "hello $*"; wc -l < data.txt\n')
    grid.cli("app", "send", "hello", "--file", str(work / "hello.sh"), "--sign-key",
             str(appkeys.private_key()))
    guide = (Path(__file__).parents[2] / "docs" / "user-guide.md").read_text()
    code = guide.split("## The Python SDK", 1)[1].split("```python\n", 1)[1].split("```")[0]
    code = (code.replace("https://127.0.0.1:4322", grid.server.url)
            .replace('"ca.pem"', repr(str(grid.server.ca)))
            .replace('"alice"', '"admin"')
            .replace('open("pw")', f"open({str(grid.server.password_file)!r})"))
    (work / "data.txt").write_text("one\ntwo\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=work, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    with tarfile.open(work / "results.tar.gz") as tar:
        stdout = tar.extractfile("stdout.txt")
        assert stdout is not None and stdout.read().decode() == "hello x\n2\n"
