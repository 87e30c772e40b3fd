"""The objects' lifecycle through the CLI against a real server (issue 23): `host rm`, a
worker's goodbye ("stopped", then alive again), `user rm`, `group rm`, `app update` (an
app's next version) and `app rm` once no unfinished job needs the app; unknown platforms
refused."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import appkeys
from tests.support.processes import (
    ServerProcess,
    WorkerProcess,
    enrolled_credential,
    run_cli,
)
from xwvm.client.sdk import ApiError, Client
from xwvm.protocol.digest import sha256_file
from xwvm.protocol.vocab import JobStatus
from xwvm.worker.credential import Credential

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def home(shared_server: ServerProcess,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("cli")
    run_cli(["login", "--server", shared_server.url, "--ca", str(shared_server.ca), "--user",
             "admin", "--password-file", str(shared_server.password_file)], home)
    yield home


def js(args: list[str], home: Path) -> Any:
    return json.loads(run_cli([*args, "--format", "json"], home).stdout)


def refused(args: list[str], home: Path) -> str:
    """The error of a command that must fail cleanly: exit 1, one message, no traceback."""
    res = run_cli(args, home, check=False)
    assert res.returncode == 1, res
    assert "Traceback" not in res.stderr
    return res.stderr


def worker_client(server: ServerProcess, path: Path) -> tuple[Client, Credential]:
    cred = enrolled_credential(server, path)
    c = Client(server.url, server.ca)
    c.login(cred.login, cred.password)
    return c, cred


def facts(name: str, arch: str = "s390x", **kw: Any) -> dict[str, Any]:
    """A host no other test's job matches (an arch of its own), unless told otherwise."""
    return {"name": name, "os": "linux", "arch": arch, "cpus": 1, "memory_mb": 512,
            "disk_mb": 1024, **kw}


def statuses(home: Path) -> dict[str, str]:
    return {h["uid"]: h["status"] for h in js(["workers"], home)}


def test_host_rm_requeues_its_jobs_and_refuses_its_worker(
        shared_server: ServerProcess, home: Path, tmp_path: Path) -> None:
    js(["app", "send", "sh-rm", "--shared"], home)
    wc, _ = worker_client(shared_server, tmp_path / "w.cred")
    host = wc.register_host(facts("doomed", shared_apps=["sh-rm"]))
    [job] = js(["submit", "sh-rm"], home)
    assert wc.request_work(host["uid"])["work"]["uid"] == job["uid"]
    [gone] = js(["host", "rm", "doomed"], home)
    assert (gone["uid"], gone["status"]) == (host["uid"], "gone")
    assert host["uid"] not in statuses(home)
    [again] = js(["works", job["uid"]], home)
    assert (again["status"], again["retries"], again["host"]) == ("PENDING", 1, None)
    kinds = [e["kind"] for e in js(["events", "--object", host["uid"]], home)]
    assert "host_removed" in kinds
    with pytest.raises(ApiError) as e:
        wc.heartbeat(host["uid"], [job["uid"]])
    assert (e.value.status, e.value.code) == (409, "host_removed")
    assert "unknown_host" in refused(["host", "rm", host["uid"]], home)
    # its worker restarted registers it again
    back = wc.register_host(facts("doomed", uid=host["uid"], shared_apps=["sh-rm"]))
    assert statuses(home)[back["uid"]] == "alive"
    run_cli(["abort", job["uid"]], home)
    run_cli(["host", "rm", back["uid"]], home)


def test_host_rm_needs_write_access(shared_server: ServerProcess, home: Path,
                                   tmp_path: Path) -> None:
    wc, _ = worker_client(shared_server, tmp_path / "w.cred")
    host = wc.register_host(facts("admins"))
    pw = tmp_path / "pw"
    pw.write_text("carol-password-1")
    run_cli(["user", "add", "carol", "--password-file", str(pw)], home)
    carol = tmp_path / "carol"
    run_cli(["login", "--server", shared_server.url, "--ca", str(shared_server.ca),
             "--user", "carol", "--password-file", str(pw)], carol)
    assert "no write access to host" in refused(["host", "rm", host["uid"]], carol)
    assert statuses(home)[host["uid"]] == "alive"
    run_cli(["host", "rm", host["uid"]], home)


def test_a_worker_that_stops_says_goodbye(server: ServerProcess, cli_home: Path,
                                          tmp_path: Path) -> None:
    enrolled_credential(server, tmp_path / "w.cred")
    worker = WorkerProcess(tmp_path, tmp_path / "w.cred", "bye").start()
    try:
        uid = wait_for_host(cli_home, "alive")
        assert worker.stop() == 0
        assert statuses(cli_home)[uid] == "stopped"
        time.sleep(server.alive_period * 6)  # far past the silence that makes a host lost
        assert statuses(cli_home)[uid] == "stopped"
        kinds = [e["kind"] for e in js(["events", "--object", uid], cli_home)]
        assert "host_stopped" in kinds and "host_lost" not in kinds
        worker.start()
        assert wait_for_host(cli_home, "alive") == uid
    finally:
        worker.stop()


def wait_for_host(home: Path, status: str, timeout: float = 60) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = [u for u, s in statuses(home).items() if s == status]
        if found:
            return found[0]
        time.sleep(0.5)
    raise AssertionError(f"no host became {status}: {statuses(home)}")


def login_home(server: ServerProcess, tmp_path: Path, login: str, password: str) -> Path:
    pw = tmp_path / f"{login}.pw"
    pw.write_text(password)
    home = tmp_path / login
    run_cli(["login", "--server", server.url, "--ca", str(server.ca), "--user", login,
             "--password-file", str(pw)], home)
    return home


def test_user_rm_and_group_rm(shared_server: ServerProcess, home: Path,
                              tmp_path: Path) -> None:
    run_cli(["group", "add", "physics"], home)
    (tmp_path / "bob.pw").write_text("bob-password-1")
    run_cli(["user", "add", "bob", "--group", "physics", "--password-file",
             str(tmp_path / "bob.pw")], home)
    bob = login_home(shared_server, tmp_path, "bob", "bob-password-1")
    js(["app", "send", "sh-user", "--shared"], home)
    [job] = js(["submit", "sh-user"], bob)
    bobs_worker = Client(shared_server.url, shared_server.ca)
    bobs_worker.login(**{k: v for k, v in bobs_cred(shared_server, bob).items()})
    host = bobs_worker.register_host(facts("bobs-pc"))
    assert "forbidden_level" in refused(["user", "rm", "admin"], bob)
    assert "owns 1 unfinished jobs" in refused(["user", "rm", "bob"], home)
    # another server's reference never reaches this server's namesake (review of issue 23)
    assert "an xw:// URI is xw://SERVER/UID" in refused(
        ["user", "rm", "xw://elsewhere/bob"], home)
    assert "names an object of server elsewhere" in refused(
        ["host", "rm", f"xw://elsewhere/{host['uid']}"], home)
    assert "still has 2 accounts (bob, worker-" in refused(["group", "rm", "physics"], home)
    run_cli(["abort", job["uid"]], home)
    [gone] = js(["user", "rm", "bob"], home)
    assert gone["enabled"] is False
    assert "bob" not in [u["login"] for u in js(["user", "list"], home)]
    assert "account bob was removed" in refused(["works"], bob)  # its session ended
    assert "wrong login or password" in refused(
        ["login", "--server", shared_server.url, "--ca", str(shared_server.ca), "--user",
         "bob", "--password-file", str(tmp_path / "bob.pw")], tmp_path / "again")
    assert host["uid"] not in statuses(home)  # its worker account went with it
    with pytest.raises(ApiError):
        bobs_worker.request_work(host["uid"])
    [kept] = js(["works", job["uid"]], home)  # its finished jobs keep their history
    assert (kept["status"], kept["owner"]) == ("ABORTED", gone["uid"])
    run_cli(["group", "rm", "physics"], home)
    assert "physics" not in [g["name"] for g in js(["group", "list"], home)]
    assert "unknown_group" in refused(["group", "rm", "physics"], home)
    run_cli(["user", "add", "bob", "--password-file", str(tmp_path / "bob.pw")], home)
    assert "unknown_user" in refused(["user", "rm", "nobody"], home)


def bobs_cred(server: ServerProcess, bob_home: Path) -> dict[str, str]:
    """A worker account bob enrolls for himself (it runs his jobs alone)."""
    c = Client(server.url, server.ca)
    c.login("bob", "bob-password-1")
    cred = c.enroll_worker()
    return {"login": cred["login"], "password": cred["password"]}


def test_app_update_replaces_a_binary_and_app_rm_keeps_history(
        shared_server: ServerProcess, home: Path, tmp_path: Path) -> None:
    v1, v2 = tmp_path / "v1.sh", tmp_path / "v2.sh"
    v1.write_text("#!/bin/sh\necho one\n")
    v2.write_text("#!/bin/sh\necho two\n")
    [app] = js(["app", "send", "hello-upd", "--file", str(v1), "--platform", "linux/x86_64",
                "--sign-key", str(appkeys.private_key())], home)
    assert (app["version"], app["signed"]) == (1, True)
    [old] = js(["submit", "hello-upd"], home)
    run_cli(["abort", old["uid"]], home)
    [pending] = js(["submit", "hello-upd"], home)
    [new] = js(["app", "update", "hello-upd", "--file", str(v2), "--platform",
                "linux/amd64"], home)
    assert (new["version"], new["signed"]) == (2, False)
    [detail] = [e["detail"] for e in js(["events", "--object", app["uid"]], home)
                if e["kind"] == "app_updated"]
    assert detail.startswith("version 2: linux/x86_64 replaced (data ")
    assert new["binaries"]["linux/x86_64"] != app["binaries"]["linux/x86_64"]
    [signed] = js(["app", "update", "hello-upd", "--file", str(v2), "--platform",
                   "linux/x86_64", "--sign-key", str(appkeys.private_key())], home)
    assert (signed["version"], signed["signed"]) == (3, True)
    wc, _ = worker_client(shared_server, tmp_path / "w.cred")
    host = wc.register_host(facts("x86", arch="x86_64"))
    work = wc.request_work(host["uid"])["work"]
    assert work["uid"] == pending["uid"]  # the job waiting runs the new version
    shas = {f["sha256"] for f in work["files"] if f["role"] == "app"}
    assert shas == {sha256_file(v2)}
    assert "1 unfinished jobs" in refused(["app", "rm", "hello-upd"], home)
    wc.report(pending["uid"], JobStatus.ERROR, message="done with it")
    run_cli(["app", "rm", "hello-upd"], home)
    assert "hello-upd" not in [a["name"] for a in js(["app", "list"], home)]
    kept = js(["works", old["uid"], pending["uid"]], home)
    assert [w["app"] for w in kept] == [app["uid"]] * 2
    story = [e["kind"] for e in js(["events"], home) if e["object"] == app["uid"]]
    assert story == ["app_created", "app_signed", "app_updated", "app_updated", "app_signed",
                     "app_deleted"]
    run_cli(["host", "rm", host["uid"]], home)


def test_app_update_refusals_leave_nothing(home: Path, tmp_path: Path) -> None:
    f = tmp_path / "a.sh"
    f.write_text("#!/bin/sh\n")
    js(["app", "send", "two-plat", "--file", str(f), "--platform", "linux/x86_64"], home)
    before = len(js(["data", "list"], home))
    err = refused(["app", "update", "two-plat", "--file", str(f), "--platform",
                   "x86_64/linux"], home)
    assert "OS and arch swapped" in err and "linux, netbsd" in err
    assert len(js(["data", "list"], home)) == before
    assert "keeps at least one binary" in refused(
        ["app", "update", "two-plat", "--remove-platform", "linux/x86_64"], home)
    assert "no binary for darwin/aarch64" in refused(
        ["app", "update", "two-plat", "--remove-platform", "macos/arm64"], home)
    [added] = js(["app", "update", "two-plat", "--file", str(f), "--platform",
                  "macos/arm64"], home)
    assert sorted(added["binaries"]) == ["darwin/aarch64", "linux/x86_64"]
    [less] = js(["app", "update", "two-plat", "--remove-platform", "linux/x86_64"], home)
    assert (sorted(less["binaries"]), less["version"]) == (["darwin/aarch64"], 3)
    assert "give --file" in refused(["app", "update", "two-plat"], home)
    js(["app", "send", "sh-only", "--shared"], home)
    assert "a shared app has no binaries" in refused(
        ["app", "update", "sh-only", "--file", str(f)], home)


def test_unknown_platforms_are_refused_at_registration(home: Path, tmp_path: Path) -> None:
    f = tmp_path / "hello5"
    f.write_text("#!/bin/sh\necho hi\n")
    err = refused(["app", "send", "hello5", "--file", str(f), "--platform", "x86_64/linux"],
                  home)
    assert "unknown platform 'x86_64/linux' (OS and arch swapped?)" in err
    assert "OS one of darwin, freebsd, linux" in err and "arch one of aarch64" in err
    data_before = js(["data", "list"], home)
    res = subprocess_xw(["xwsendapp", "hello5", "sparc", "linux", str(f)], home)
    assert res.returncode != 0 and "unknown platform 'linux/sparc'" in res.stderr, res
    assert "hello5" not in [a["name"] for a in js(["app", "list"], home)]
    assert js(["data", "list"], home) == data_before, "refused before any upload"
    # XWHEP's order is CPU OS; the other way round is read as meant, and said so
    res = subprocess_xw(["xwsendapp", "hello5", "linux", "x86_64", str(f)], home)
    assert res.returncode == 0 and "read as CPU x86_64, OS linux" in res.stderr, res
    [app] = [a for a in js(["app", "list"], home) if a["name"] == "hello5"]
    assert list(app["binaries"]) == ["linux/x86_64"]


def subprocess_xw(args: list[str], home: Path) -> Any:
    import os
    import subprocess
    return subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True,
                          env={**os.environ, "XWVM_CONFIG_DIR": str(home)}, timeout=120)
