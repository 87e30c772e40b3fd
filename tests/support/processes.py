"""Real xwvm server and worker processes for tests and benchmarks, driven through the CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.support import appkeys
from tests.support.postgres import free_port
from xwvm.client.sdk import Client
from xwvm.worker.credential import Credential

XWVM = [sys.executable, "-m", "xwvm.cli"]
ADMIN_PASSWORD = "admin-password-1"


def run_cli(args: list[str], config_dir: Path, *, check: bool = True, timeout: float = 120,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XWVM_CONFIG_DIR": str(config_dir), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([*XWVM, *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"xwvm {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


class ServerProcess:
    def __init__(self, root: Path, db_url: str | None = None, alive_period: int = 2,
                 workers: int = 2, env: dict[str, str] | None = None,
                 name: str = "server") -> None:
        self.root = Path(root)
        self.name = name
        self.data_dir = self.root / "server"
        self.port = free_port()
        self.db_url = db_url
        self.alive_period = alive_period
        self.workers = workers
        self.env = {"XWVM_REAP_INTERVAL_S": "0.5", "XWVM_IDLE_RETRY_S": "1", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.password_file = self.root / "admin.pw"

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca(self) -> Path:
        return self.data_dir / "ca.pem"

    def init(self) -> ServerProcess:
        self.root.mkdir(parents=True, exist_ok=True)
        self.password_file.write_text(ADMIN_PASSWORD)
        args = ["server", "init", "--data-dir", str(self.data_dir), "--admin-password-file",
                str(self.password_file), "--alive-period", str(self.alive_period)]
        if self.db_url:
            args += ["--db", self.db_url]
        run_cli(args, self.root / "init-cfg")
        return self

    def start(self) -> ServerProcess:
        with open(self.root / f"{self.name}.log", "ab") as log:
            self.proc = subprocess.Popen(
                [*XWVM, "server", "run", "--data-dir", str(self.data_dir), "--bind",
                 f"127.0.0.1:{self.port}", "--workers", str(self.workers)],
                env={**os.environ, **self.env}, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log}")
            try:
                requests.get(f"{self.url}/api/v1/health", verify=str(self.ca), timeout=2)
                return self
            except requests.RequestException:
                time.sleep(0.2)
        raise RuntimeError("server did not answer within 60 s")

    @property
    def log(self) -> str:
        path = self.root / f"{self.name}.log"
        return path.read_text() if path.exists() else ""

    def sibling(self, name: str) -> ServerProcess:
        """Another server process on the same data directory and database, on its own port."""
        other = ServerProcess(self.root, self.db_url, self.alive_period, self.workers,
                              name=name)
        other.env = dict(self.env)
        return other

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def client(self, login: str = "admin", password: str = ADMIN_PASSWORD) -> Client:
        c = Client(self.url, self.ca)
        c.login(login, password)
        return c


def enrolled_credential(server: ServerProcess, path: Path, **enroll: object) -> Credential:
    """A worker account enrolled by the server's admin (``enroll``: public, project),
    saved to ``path`` as ``xwvm worker enroll`` would."""
    cred = server.client().enroll_worker(**enroll)
    c = Credential(server=server.url, login=cred["login"], password=cred["password"],
                   ca_pem=server.ca.read_text())
    c.save(path)
    return c


class WorkerProcess:
    def __init__(self, root: Path, credential: Path, name: str,
                 extra: list[str] | None = None) -> None:
        self.root = Path(root)
        self.work_dir = self.root / name
        self.credential = credential
        self.name = name
        # Native-job tests need no hypervisor probe (a VM boot); VM tests pass their own.
        self.extra = extra if extra is not None else ["--hypervisor", "none"]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f"{self.name}.log", "ab") as log:
            self.proc = subprocess.Popen(
                [*XWVM, "worker", "run", "--credential", str(self.credential), "--work-dir",
                 str(self.work_dir), "--name", self.name, *self.extra,
                 # the key that signs the tests' native apps (tests/support/appkeys.py)
                 "--trusted-key", str(appkeys.public_key())],
                env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    @property
    def log(self) -> str:
        path = self.root / f"{self.name}.log"
        return path.read_text() if path.exists() else ""
