"""The XtremWeb-HEP aliases, run as the installed commands against a real server."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.e2e.conftest import start_workers, stop_all
from tests.support import appkeys
from tests.support.processes import ServerProcess

BIN = Path(sys.executable).parent


def xw(cmd: str, *args: str, home: Path, cwd: Path, check: bool = True) -> str:
    proc = subprocess.run([str(BIN / cmd), *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "XWVM_CONFIG_DIR": str(home)}, timeout=120)
    if check:
        assert proc.returncode == 0, f"{cmd} {args}: {proc.stdout}{proc.stderr}"
    return proc.stdout


def test_xw_aliases(server: ServerProcess, cli_home: Path, tmp_path: Path) -> None:
    script = tmp_path / "count.sh"
    script.write_text('#!/bin/sh\nwc -l < env.txt\necho "$@"\n')
    (tmp_path / "env.txt").write_text("a\nb\nc\n")
    out = xw("xwsendapp", "count", "x86_64", "linux", str(script), "--xwformat", "csv",
             "--sign-key", str(appkeys.private_key()), home=cli_home, cwd=tmp_path)
    [app] = list(csv.DictReader(io.StringIO(out)))
    assert app["name"] == "count" and "linux/x86_64" in app["binaries"]
    apps = ET.fromstring(xw("xwapps", "--xwformat", "xml", home=cli_home, cwd=tmp_path))
    assert [a.findtext("name") for a in apps.iter("app")] == ["count"]

    workers = start_workers(server, server.client(), tmp_path / "w", 1)
    try:
        out = xw("xwsubmit", "count", "one", "two", "--xwenv", "env.txt", "--xwlistenport",
                 "8080", "--xwwait", "--xwformat", "json", home=cli_home, cwd=tmp_path)
    finally:
        stop_all(workers)
    [job] = json.loads(out)
    assert job["status"] == "COMPLETED" and job["listen_port"] == 8080
    uri = job["uri"]
    works = ET.fromstring(xw("xwworks", uri, "--xwformat", "xml", home=cli_home, cwd=tmp_path))
    assert [w.findtext("uid") for w in works.iter("work")] == [job["uid"]]
    fetched = ET.fromstring(xw("xwresults", uri, "--xwformat", "xml", home=cli_home,
                               cwd=tmp_path))
    assert [r.findtext("uid") for r in fetched.iter("result")] == [job["uid"]]
    assert (tmp_path / job["uid"] / "stdout.txt").read_text().split() == ["3", "one", "two"]

    out = xw("xwsenddata", "env.txt", "--xwformat", "json", home=cli_home, cwd=tmp_path)
    [data] = json.loads(out)
    datas = list(csv.DictReader(io.StringIO(xw("xwdatas", "--xwformat", "csv",
                                               home=cli_home, cwd=tmp_path))))
    assert data["uid"] in {d["uid"] for d in datas}
    hosts = list(csv.DictReader(io.StringIO(xw("xwworkers", "--xwformat", "csv",
                                               home=cli_home, cwd=tmp_path))))
    assert [h["name"] for h in hosts] == ["w0"]
    assert "700" in xw("xwchmod", "700", data["uri"], home=cli_home, cwd=tmp_path)
    assert server.client().get_data(data["uid"])["access_rights"] == "700"
    [changed] = list(csv.DictReader(io.StringIO(xw("xwchmod", "u+w", data["uri"],
                                                   "--xwformat", "csv", home=cli_home,
                                                   cwd=tmp_path))))
    assert (changed["uid"], changed["kind"], changed["access_rights"]) == \
        (data["uid"], "data", "700")
    removed = list(csv.DictReader(io.StringIO(xw("xwrm", data["uri"], uri, "--xwformat",
                                                 "csv", home=cli_home, cwd=tmp_path))))
    assert [(r["uid"], r["kind"]) for r in removed] == [(data["uid"], "data"),
                                                       (job["uid"], "work")]
    assert job["uid"] not in {w["uid"] for w in server.client().list_works()}
    missing = subprocess.run([str(BIN / "xwrm"), data["uid"]], capture_output=True, text=True,
                             env={**os.environ, "XWVM_CONFIG_DIR": str(cli_home)})
    assert missing.returncode == 1 and "no job, data or app" in missing.stderr
