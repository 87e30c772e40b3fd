"""A job round trip through the CLI against a real server and a real worker."""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.support import appkeys
from tests.support.processes import ServerProcess, WorkerProcess, run_cli


def test_cli_round_trip(server: ServerProcess, cli_home: Path, tmp_path: Path) -> None:
    script = tmp_path / "hello.sh"
    script.write_text('#!/bin/sh\necho "hello $*"\ntr a-z A-Z < data.txt > upper.txt\n'
                      'echo "from stderr" >&2\n')
    (tmp_path / "data.txt").write_text("some input data\n")
    run_cli(["app", "send", "hello", "--file", str(script), "--sign-key",
             str(appkeys.private_key())], cli_home)
    cred = tmp_path / "worker.cred"
    out = run_cli(["worker", "enroll", "-o", str(cred)], cli_home).stdout
    assert "worker" in out and cred.stat().st_mode & 0o777 == 0o600
    worker = WorkerProcess(tmp_path, cred, "w0").start()
    try:
        res = run_cli(["submit", "hello", "--input", str(tmp_path / "data.txt"), "--wait",
                       "--timeout", "90", "--format", "json", "--", "arg1", "arg2"], cli_home)
        [job] = json.loads(res.stdout)
        assert job["status"] == "COMPLETED" and job["exit_code"] == 0
        assert job["uri"].endswith(job["uid"]) and job["uri"].startswith("xw://")
        out_dir = tmp_path / "out"
        run_cli(["results", job["uid"], "-o", str(out_dir)], cli_home)
        assert (out_dir / "stdout.txt").read_text() == "hello arg1 arg2\n"
        assert (out_dir / "stderr.txt").read_text() == "from stderr\n"
        assert (out_dir / "upper.txt").read_text() == "SOME INPUT DATA\n"
        assert not (out_dir / "data.txt").exists(), "unchanged inputs are not results"

        rows = list(csv.DictReader(io.StringIO(
            run_cli(["works", job["uid"], "--format", "csv"], cli_home).stdout)))
        assert [(r["uid"], r["status"]) for r in rows] == [(job["uid"], "COMPLETED")]
        xml = ET.fromstring(run_cli(["works", "--format", "xml"], cli_home).stdout)
        assert [w.findtext("status") for w in xml.iter("work")] == ["COMPLETED"]
        table = run_cli(["works"], cli_home).stdout.splitlines()
        assert table[0].split()[:2] == ["uid", "status"] and job["uid"] in table[1]
        hosts = json.loads(run_cli(["workers", "--format", "json"], cli_home).stdout)
        assert [h["name"] for h in hosts] == ["w0"] and hosts[0]["status"] == "alive"
    finally:
        worker.stop()


def test_failing_job_exits_nonzero_and_reports_error(server: ServerProcess, cli_home: Path,
                                                     tmp_path: Path) -> None:
    script = tmp_path / "fail.sh"
    script.write_text("#!/bin/sh\necho oops >&2\nexit 3\n")
    run_cli(["app", "send", "fail", "--file", str(script), "--sign-key",
             str(appkeys.private_key())], cli_home)
    cred = tmp_path / "worker.cred"
    run_cli(["worker", "enroll", "-o", str(cred)], cli_home)
    worker = WorkerProcess(tmp_path, cred, "w0").start()
    try:
        res = run_cli(["submit", "fail", "--wait", "--timeout", "90", "--format", "json"],
                      cli_home, check=False)
        assert res.returncode == 1
        [job] = json.loads(res.stdout)
        assert job["status"] == "ERROR" and job["exit_code"] == 3
        assert "exit code 3" in job["error"]
        run_cli(["results", job["uid"], "-o", str(tmp_path / "o")], cli_home)
        assert (tmp_path / "o" / "stderr.txt").read_text() == "oops\n"
    finally:
        worker.stop()


def test_cli_errors_are_clear(server: ServerProcess, cli_home: Path, tmp_path: Path) -> None:
    res = run_cli(["submit", "no-such-app"], cli_home, check=False)
    assert res.returncode == 1 and "no app of that name [unknown_app]" in res.stderr
    res = run_cli(["works", "not-a-uid"], cli_home, check=False)
    assert res.returncode == 1 and "is not a UUID" in res.stderr
    res = run_cli(["works"], tmp_path / "nobody", check=False)
    assert res.returncode == 1 and "not logged in" in res.stderr
    bad = tmp_path / "bad.pw"
    bad.write_text("wrong-password")
    res = run_cli(["login", "--server", server.url, "--ca", str(server.ca), "--user", "admin",
                   "--password-file", str(bad)], tmp_path / "c2", check=False)
    assert res.returncode == 1 and "wrong login or password" in res.stderr
    res = run_cli(["login", "--server", server.url, "--user", "admin",
                   "--password-file", str(server.password_file)], tmp_path / "c3", check=False)
    assert res.returncode == 1 and "TLS verification" in res.stderr


def test_worker_enroll_for_a_project(server: ServerProcess, cli_home: Path,
                                     tmp_path: Path) -> None:
    """`xwvm worker enroll --project G`: a worker account confined to G's jobs."""
    created = run_cli(["group", "add", "physics"], cli_home).stdout
    group_uid = created.split()[-1]
    cred = tmp_path / "physics.cred"
    out = run_cli(["worker", "enroll", "-o", str(cred), "--project", "physics"],
                  cli_home).stdout
    assert "for physics" in out
    login = json.loads(cred.read_text())["login"]
    users = json.loads(run_cli(["user", "list", "--format", "json"], cli_home).stdout)
    [account] = [u for u in users if u["login"] == login]
    assert (account["rights"], account["confined_to_group"], account["confined_to_user"]) \
        == ("worker", group_uid, None)
    unknown = run_cli(["worker", "enroll", "-o", str(tmp_path / "x.cred"), "--project",
                       "no-such-group"], cli_home, check=False)
    assert unknown.returncode != 0 and "no usergroup of that name" in unknown.stderr
    assert not (tmp_path / "x.cred").exists()


def test_worker_enroll_speaks_every_format_and_never_prints_the_password(
        cli_home: Path, tmp_path: Path) -> None:
    from xwvm.worker.credential import Credential
    cred = tmp_path / "w.cred"
    [row] = json.loads(run_cli(["worker", "enroll", "-o", str(cred), "--format", "json"],
                               cli_home).stdout)
    saved = Credential.load(cred)
    assert row == {"credential": str(cred), "login": saved.login,
                   "for": row["for"]} and row["for"].startswith("jobs of ")
    for fmt in ("csv", "xml", "table"):
        out = run_cli(["worker", "enroll", "-o", str(tmp_path / f"{fmt}.cred"), "--format",
                       fmt], cli_home).stdout
        password = Credential.load(tmp_path / f"{fmt}.cred").password
        assert "worker" in out and password not in out
    assert saved.password not in json.dumps(row)
