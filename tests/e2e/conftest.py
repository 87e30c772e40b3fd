"""End-to-end helpers: an app, enrolled workers, and waiting for conditions."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from tests.support import appkeys
from tests.support.processes import ServerProcess, WorkerProcess
from xwvm.client.sdk import Client

T = TypeVar("T")


def eventually(fn: Callable[[], T | None], timeout: float = 60, every: float = 0.3,
               what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def make_app(client: Client, tmp: Path, name: str, script: str) -> dict:
    path = tmp / f"{name}.sh"
    path.write_text("#!/bin/sh\n" + script)
    data = client.upload_data(path)
    return appkeys.create_signed_app(client, name, {"linux/x86_64": data["uid"]})


def start_workers(server: ServerProcess, client: Client, root: Path, n: int,
                  public: bool = False) -> list[WorkerProcess]:
    workers = []
    for i in range(n):
        cred = client.enroll_worker(public=public)
        path = root / f"cred-{i}.json"
        from xwvm.worker.credential import Credential
        Credential(server=server.url, login=cred["login"], password=cred["password"],
                   ca_pem=server.ca.read_text()).save(path)
        workers.append(WorkerProcess(root, path, f"w{i}").start())
    return workers


def stop_all(workers: list[WorkerProcess]) -> None:
    for w in workers:
        w.stop()
