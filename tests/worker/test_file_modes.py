"""A file-permission audit of the worker (issue 13): after ``xwvm worker enroll``, a worker's
start and a VM job, nothing secret is readable by another local user.

Checked by mode bits and by trying to read as ``nobody`` (runuser). Secrets: the worker's
credential, the data cache (job inputs, possibly private), the VM's context ISO (it holds
the job's delegated token), its overlay and exchange disk (the guest's writes), its
console log (whatever the payload printed).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.guest import Kernel, build_guest
from tests.support.processes import ServerProcess, run_cli
from tests.worker.drivers.conftest import kernel, qcow2_template, vm_host, vm_root  # noqa: F401
from xwvm.protocol.messages import InputFile
from xwvm.worker.cache import DataCache
from xwvm.worker.credential import Credential
from xwvm.worker.drivers import VMSpec, VMState
from xwvm.worker.drivers.libvirt import LibvirtDriver

OTHERS = stat.S_IROTH | stat.S_IWOTH | stat.S_IRGRP | stat.S_IWGRP


def _others_can_read(path: Path) -> bool:
    """Whether the unprivileged ``nobody`` reads ``path`` (mode bits when runuser is
    missing or we are not root)."""
    if os.geteuid() == 0 and shutil.which("runuser"):
        proc = subprocess.run(["runuser", "-u", "nobody", "--", "head", "-c1", str(path)],
                              capture_output=True, timeout=30)
        return proc.returncode == 0
    return bool(path.stat().st_mode & (stat.S_IROTH | stat.S_IRGRP))


def _assert_private(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    assert not mode & OTHERS, f"{path} is {oct(mode)}"
    assert not _others_can_read(path), f"another local user reads {path}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    s = ServerProcess(tmp_path_factory.mktemp("modes")).init().start()
    yield s
    s.stop()


def test_credential_save_tightens_a_file_that_existed_0644(tmp_path: Path) -> None:
    path = tmp_path / "w.cred"
    path.write_text("{}")
    path.chmod(0o644)
    Credential("https://s", "w", "secret-password").save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_enroll_writes_a_credential_no_one_else_reads(server: ServerProcess,
                                                     tmp_path: Path) -> None:
    cfg = tmp_path / "cfg"
    pw = tmp_path / "pw"
    pw.write_text("admin-password-1")
    run_cli(["login", "--server", server.url, "--ca", str(server.ca), "--user", "admin",
             "--password-file", str(pw)], cfg)
    dest = tmp_path / "shared" / "worker.cred"
    dest.parent.mkdir()
    dest.parent.chmod(0o755)
    dest.write_text("")
    dest.chmod(0o644)  # an existing, world-readable file (a re-enrollment)
    run_cli(["worker", "enroll", "-o", str(dest)], cfg)
    assert "password" in dest.read_text()
    _assert_private(dest)


def test_the_data_cache_is_the_workers_alone_and_inputs_go_with_their_job(
        tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    work.chmod(0o755)
    cache = DataCache(work / "cache")
    data = b"private input of alice"
    import hashlib
    sha = hashlib.sha256(data).hexdigest()
    got = cache.get(sha, lambda dest: dest.write_bytes(data), len(data))
    assert stat.S_IMODE((work / "cache").stat().st_mode) == 0o700
    assert not _others_can_read(got)
    cache.forget([InputFile("input", "in", "d", sha, len(data)),
                  InputFile("app", "linux-x86_64", "a", "0" * 64, 1)])
    assert not got.exists(), "a finished job's input is not kept"


def test_a_vm_jobs_files_are_private(vm_root: Path, kernel: Kernel,  # noqa: F811
                                     qcow2_template: Path) -> None:  # noqa: F811
    work = vm_root / f"modes{os.getpid()}"
    work.mkdir()
    work.chmod(0o711)
    driver = LibvirtDriver(f"fm{os.getpid()}", work)
    iso = work / "ctx.iso"
    iso.write_bytes(b"token" * 1000)
    iso.chmod(0o600)
    exchange = work / "exchange.img"
    with exchange.open("wb") as f:
        f.truncate(1 << 20)
    exchange.chmod(0o600)
    gdir = vm_root / "guests"
    gdir.mkdir(exist_ok=True)
    gdir.chmod(0o755)
    guest = build_guest("echo secret-output-of-the-payload\nsleep 5\n", gdir, kernel=kernel,
                        name="modes")
    spec = VMSpec(job_uid="modes", worker_id=driver.worker_id, base_image=qcow2_template,
                  memory_mb=192, context_iso=iso, exchange_disk=exchange, kernel=guest.kernel,
                  initrd=guest.initrd, cmdline=guest.cmdline)
    try:
        driver.define(spec)
        driver.start("modes")
        vm_dir = driver._vm_dir("modes")
        deadline = time.monotonic() + 180
        while "secret-output" not in driver.console_log("modes"):
            assert time.monotonic() < deadline, driver.console_log("modes")
            time.sleep(0.5)
        for path in (vm_dir / "disk.qcow2", vm_dir / "context.iso", vm_dir / "console.log",
                     exchange):
            _assert_private(path)
        assert not stat.S_IMODE(vm_dir.stat().st_mode) & (stat.S_IROTH | stat.S_IRGRP), \
            "nobody else lists the VM's folder"
        while driver.state("modes") in (VMState.RUNNING, VMState.STOPPING):
            assert time.monotonic() < deadline, driver.console_log("modes")
            time.sleep(0.5)
        for path in (vm_dir / "disk.qcow2", vm_dir / "context.iso", vm_dir / "console.log"):
            _assert_private(path)
    finally:
        driver.destroy("modes")
        driver.close()
        shutil.rmtree(work, ignore_errors=True)
