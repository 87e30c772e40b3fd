"""Jobs that can never run are refused at submission, and `xwvm why JOB` says why a pending
job waits (HTCondor's ``condor_q -better-analyze``), through the real CLI against a real
server over TLS: ``--network internet`` (no worker enforces it), ``--host`` naming a host
that does not exist or whose worker could never run the job; for a pending job, the hosts
considered, how many fail each matching condition, and the one-line summary (a platform no
worker offers, a private job with no worker of one's own, hosts that went silent)."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import ServerProcess, run_cli
from xwvm.client.sdk import Client

HOST = {"os": "linux", "arch": "x86_64", "cpus": 2, "memory_mb": 2048, "disk_mb": 4096}


@dataclass
class Grid:
    server: ServerProcess
    admin: Client
    root: Path

    def user(self, login: str) -> tuple[Client, Path]:
        """A standard user: an SDK client and a CLI config dir logged in as them."""
        password = f"pw-{uuid.uuid4().hex}"
        self.admin.create_user(login, password, "standard")
        home = self.root / login
        home.mkdir()
        (home / "pw").write_text(password)
        run_cli(["login", "--server", self.server.url, "--ca", str(self.server.ca),
                 "--user", login, "--password-file", str(home / "pw")], home)
        return self.server.client(login, password), home

    def host(self, enroller: Client, public: bool = False, **facts: Any) -> str:
        """A host registered by a worker account that ``enroller`` enrolled."""
        cred = enroller.enroll_worker(public=public)
        worker = self.server.client(cred["login"], cred["password"])
        return worker.register_host({"name": f"h-{uuid.uuid4().hex[:6]}", **HOST,
                                     **facts})["uid"]

    def shared_app(self) -> str:
        name = f"sim-{uuid.uuid4().hex[:6]}"
        self.admin.create_app(name, kind="shared")
        return name


@contextlib.contextmanager
def new_grid(root: Path, alive_period: int = 60) -> Iterator[Grid]:
    """A fresh server (the analysis counts every host); hosts registered here never beat,
    so they stay alive only for a few periods."""
    server = ServerProcess(root / "srv", alive_period=alive_period).init().start()
    try:
        yield Grid(server, server.client(), root)
    finally:
        server.stop()


@pytest.fixture
def grid(tmp_path: Path) -> Iterator[Grid]:
    with new_grid(tmp_path) as g:
        yield g


def submit(home: Path, *args: str) -> str:
    [job] = json.loads(run_cli(["submit", *args, "--format", "json"], home).stdout)
    return job["uid"]


def why(home: Path, uid: str) -> dict[str, Any]:
    return json.loads(run_cli(["why", uid, "--format", "json"], home).stdout)


def failing(answer: dict[str, Any]) -> dict[str, int]:
    return {c["name"]: c["failing"] for c in answer["conditions"]}


def refused(home: Path, *args: str) -> str:
    proc = run_cli(["submit", *args], home, check=False)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    return proc.stderr


def test_network_internet_is_refused_at_submission(grid: Grid) -> None:
    _, home = grid.user("alice")
    err = refused(home, "--template", "base", "--command", "true", "--network", "internet")
    assert "network=internet is not supported yet: no worker enforces it" in err
    assert "[network_unsupported]" in err
    err = refused(home, grid.shared_app(), "--network", "internet")
    assert "network=internet is not supported yet" in err
    assert grid.admin.list_works() == []


def test_a_host_that_does_not_exist_is_refused(grid: Grid) -> None:
    _, home = grid.user("alice")
    missing = str(uuid.uuid4())
    err = refused(home, grid.shared_app(), "--host", missing)
    assert f"no host with id {missing}" in err and "[unknown_host]" in err
    assert grid.admin.list_works() == []


def test_a_host_whose_worker_could_never_run_the_job_is_refused(grid: Grid) -> None:
    app = grid.shared_app()
    _, alice = grid.user("alice")
    bob, bob_home = grid.user("bob")
    bobs = grid.host(bob, shared_apps=[app])
    err = refused(alice, app, "--host", bobs)
    assert f"({bobs}) can never run this job: its worker runs only the jobs of the user " \
           "who enrolled it" in err and "[host_not_allowed]" in err
    public = grid.host(grid.admin, public=True, shared_apps=[app])
    err = refused(alice, app, "--host", public, "--chmod", "700")
    assert "its worker runs only public jobs (rights like 755; this one: 700)" in err
    assert grid.admin.list_works() == []
    # what such a host can run is accepted, and pinned to it
    for home, host in ((bob_home, bobs), (alice, public)):
        uid = submit(home, app, "--host", f"xw://127.0.0.1/{host}")
        assert grid.admin.get_work(uid)["status"] == "PENDING"
        assert why(home, uid)["matching"] == 1


def test_why_names_the_platform_no_worker_offers(grid: Grid, tmp_path: Path) -> None:
    binary = tmp_path / "tool"
    binary.write_text("#!/bin/sh\necho arm\n")
    data = grid.admin.upload_data(binary)["uid"]
    grid.admin.create_app("armonly", binaries={"linux/aarch64": data})
    grid.host(grid.admin, public=True)
    _, home = grid.user("alice")
    uid = submit(home, "armonly")
    table = run_cli(["why", uid], home).stdout
    assert table.splitlines()[0] == (
        f"job {uid} (PENDING): no worker offers platform linux/aarch64: the platform(s) app "
        "armonly has a binary for")
    assert "1 host(s) considered, 0 can run it now" in table
    assert "platform" in table and "rights" in table
    answer = why(home, uid)
    assert (answer["hosts"], answer["matching"], answer["kind"]) == (1, 0, "native")
    assert failing(answer) == {"rights": 0, "expected_host": 0, "native": 0, "platform": 1,
                               "signed": 0, "memory": 0, "cpus": 0, "disk": 0,
                               "alive": 0, "not_paused": 0}
    grid.host(grid.admin, public=True, arch="aarch64")
    answer = why(home, uid)
    assert (answer["hosts"], answer["matching"]) == (2, 1)
    assert answer["summary"].startswith("1 host(s) can run it now: it waits its turn")


def test_why_a_private_job_waits_with_no_worker_of_ones_own(grid: Grid) -> None:
    app = grid.shared_app()
    grid.host(grid.admin, public=True, shared_apps=[app])
    alice, home = grid.user("alice")
    uid = submit(home, app, "--chmod", "700", "--min-memory", "1024")
    answer = why(home, uid)
    assert answer["summary"] == ("it is private (rights 700): only workers enrolled by you "
                                 "(xwvm worker enroll) run it, and you have none")
    assert failing(answer)["rights"] == 1
    grid.host(alice, shared_apps=[app], memory_mb=512)  # her own, too small
    answer = why(home, uid)
    assert answer["summary"] == ("no worker has 1024 MB of memory (of the 1 of 2 hosts that "
                                 "pass the conditions before)")
    assert failing(answer)["memory"] == 1 and failing(answer)["rights"] == 1
    grid.host(alice, shared_apps=[app])
    assert why(home, uid)["matching"] == 1


def test_why_says_the_hosts_that_could_run_it_went_silent(tmp_path: Path) -> None:
    with new_grid(tmp_path, alive_period=1) as grid:
        silent_hosts(grid)


def silent_hosts(grid: Grid) -> None:
    app = grid.shared_app()
    grid.host(grid.admin, public=True, shared_apps=[app])  # it never beats again
    _, home = grid.user("alice")
    uid = submit(home, app)
    deadline = time.monotonic() + 30
    while (answer := why(home, uid))["matching"] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert answer["summary"] == ("the 1 host(s) that could run it are not alive (lost or "
                                 "stopped)")
    assert failing(answer)["alive"] == 1


def test_why_is_for_the_owner_or_an_administrator(grid: Grid) -> None:
    app = grid.shared_app()
    _, alice = grid.user("alice")
    _, bob = grid.user("bob")
    uid = submit(alice, app)
    assert why(alice, uid)["summary"] == "no worker has registered with this server"
    proc = run_cli(["why", uid], bob, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"only the owner of job {uid} or an administrator may ask" in proc.stderr
    admin_home = grid.root / "admin"
    run_cli(["login", "--server", grid.server.url, "--ca", str(grid.server.ca), "--user",
             "admin", "--password-file", str(grid.server.password_file)], admin_home)
    assert why(admin_home, uid)["status"] == "PENDING"
    held = submit(alice, app, "--hold")
    assert run_cli(["why", held], alice).stdout.strip() == (
        f"job {held} (WAITING): it is held (WAITING): xwvm release {held} lets it run")
    proc = run_cli(["why", str(uuid.uuid4())], alice, check=False)
    assert proc.returncode == 1 and "no job with id" in proc.stderr
