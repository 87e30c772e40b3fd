"""VM jobs end to end with real VMs: client → server → worker → libvirt/QEMU → appliance
guest → nested worker → results → client. The payloads check the guest's hardening and
network policy from inside the guest."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import eventually
from tests.imagebuild.conftest import built_image
from tests.support.lan import free_port, http_server, lan_host, wait_listening
from tests.support.processes import ServerProcess, WorkerProcess, run_cli
from xwvm import signing
from xwvm.client.sdk import Client
from xwvm.worker.credential import Credential

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3000)]


@dataclass
class Grid:
    server: ServerProcess
    admin: Client
    home: Path          # the admin's CLI config dir
    root: Path          # 0711 folder the QEMU user can traverse
    public_key: Path


@pytest.fixture(scope="module")
def vm_host() -> None:
    proc = subprocess.run([str(REPO / "scripts" / "install-vm-host.sh")],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def grid(vm_host: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Grid]:
    image = built_image("base")
    root = Path(tempfile.mkdtemp(prefix="xwvm-e2e-vm-", dir="/var/tmp"))
    root.chmod(0o711)
    server = ServerProcess(tmp_path_factory.mktemp("vmgrid")).init().start()
    home = root / "admin-cli"
    try:
        run_cli(["login", "--server", server.url, "--ca", str(server.ca), "--user", "admin",
                 "--password-file", str(server.password_file)], home)
        keys = root / "keys"
        run_cli(["admin", "keygen", "-o", str(keys)], home)
        public, private = keys / signing.PUBLIC_KEY_FILE, keys / signing.PRIVATE_KEY_FILE
        run_cli(["template", "push", str(image)], home, timeout=600)
        manifest = json.loads((image / "manifest.json").read_text())
        ref = f"{manifest['name']}:{manifest['version']}"
        run_cli(["template", "sign", ref, "--key", str(private)], home)
        run_cli(["template", "publish", ref], home)
        yield Grid(server, server.client(), home, root, public)
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def vm_worker(grid: Grid, name: str, work_dir: Path | None = None) -> WorkerProcess:
    cred = grid.admin.enroll_worker()
    path = grid.root / f"{name}.cred"
    Credential(server=grid.server.url, login=cred["login"], password=cred["password"],
               ca_pem=grid.server.ca.read_text()).save(path)
    w = WorkerProcess(grid.root, path, name,
                      extra=["--hypervisor", "libvirt", "--trusted-key", str(grid.public_key),
                             "--vm-hang-timeout", "180"])
    if work_dir is not None:
        w.work_dir = work_dir
    return w.start()


def results(admin: Client, uid: str, dest: Path) -> dict[str, str]:
    archive = admin.download_result(uid, dest / f"{uid}.tgz")
    with tarfile.open(archive) as tar:
        return {m.name: tar.extractfile(m).read().decode()  # type: ignore[union-attr]
                for m in tar.getmembers() if m.isfile()}


PROBE = """\
#!/bin/sh
echo "args: $*"
echo "user: $(id -un)"
try() {  # host port label
  if python3 - "$1" "$2" <<'PY'
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=4).close()
except OSError:
    sys.exit(1)
PY
  then echo "reach $3: yes"; else echo "reach $3: no"; fi
}
try xwvm-server "$SERVER_PORT" server
try "$LAN_HOST" "$LAN_PORT" lan
try 10.0.2.2 "$OTHER_PORT" host-service
try 10.0.2.100 "$OTHER_PORT" other-port
if command -v sudo >/dev/null 2>&1; then echo "sudo: present"; else echo "sudo: absent"; fi
if [ -r /etc/shadow ]; then echo "shadow: readable"; else echo "shadow: unreadable"; fi
ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \\
    -o PreferredAuthentications=password,keyboard-interactive -o ConnectTimeout=5 \\
    root@127.0.0.1 true 2>ssh-root.txt; echo "ssh root password: exit $?"
ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \\
    -o PreferredAuthentications=password,keyboard-interactive -o ConnectTimeout=5 \\
    xwvm@127.0.0.1 true 2>ssh-user.txt; echo "ssh user password: exit $?"
cp id_test k && chmod 600 k
ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \\
    -o ConnectTimeout=5 -i k xwvm@127.0.0.1 'echo "key login as $(id -un)"' \\
    2>ssh-key.txt; echo "ssh user key: exit $?"
rm -f k
if cat /run/xwvm/context.json >/dev/null 2>&1; then echo "context: readable"; \\
    else echo "context: unreadable"; fi
if head -c 1 /dev/sr0 >/dev/null 2>&1; then echo "cd: readable"; else echo "cd: unreadable"; fi
echo "cidata mounted: $(grep -c /run/xwvm/cidata /proc/mounts)"
wc -c < data.txt > size.txt
python3 - <<'PY'
import os
pid = os.getppid()  # up to the first root process: the agent
while pid > 1:
    status = open(f"/proc/{pid}/status").read()
    if status.split("Uid:")[1].split()[0] == "0":
        break
    pid = int(status.split("PPid:")[1].split()[0])
print("oom agent:", open(f"/proc/{pid}/oom_score_adj").read().strip())
print("oom payload:", open("/proc/self/oom_score_adj").read().strip())
PY
"""


def ssh_key_pair(tmp_path: Path) -> tuple[Path, Path]:
    """An Ed25519 key pair in OpenSSH formats: (private, public)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    key = Ed25519PrivateKey.generate()
    private, public = tmp_path / "id_test", tmp_path / "id_test.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.OpenSSH,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                     serialization.PublicFormat.OpenSSH)
                       + b" e2e-test\n")
    return private, public


def test_vm_job_round_trip_and_guest_hardening(grid: Grid, tmp_path: Path) -> None:
    other = free_port()
    other_server = http_server(other, "127.0.0.1")
    worker = vm_worker(grid, "vmw1")
    subnet = f"10.97.{os.getpid() % 250 + 1}"
    try:
        with lan_host(f"xe{os.getpid() % 10000}", subnet) as lan:
            wait_listening("127.0.0.1", other)
            probe = tmp_path / "probe.sh"
            probe.write_text(PROBE)
            data = tmp_path / "data.txt"
            data.write_text("x" * 1234)
            private, public = ssh_key_pair(tmp_path)
            out = run_cli(["submit", "--template", "base", "--command", "sh probe.sh",
                           "--input", str(probe), "--input", str(data),
                           "--input", str(private), "--ssh-key", str(public),
                           "--env", f"SERVER_PORT={grid.server.port}",
                           "--env", f"LAN_HOST={lan.address}", "--env",
                           f"LAN_PORT={lan.port}", "--env", f"OTHER_PORT={other}",
                           "--wall-clock", "600", "--wait", "--timeout", "900",
                           "--format", "json", "--", "one", "two"], grid.home, timeout=960,
                          check=False)
    finally:
        worker.stop()
        other_server.terminate()
    assert out.returncode == 0, out.stdout + out.stderr + worker.log
    [job] = json.loads(out.stdout)
    assert job["status"] == "COMPLETED" and job["exit_code"] == 0
    files = results(grid.admin, job["uid"], tmp_path)
    stdout = files["stdout.txt"]
    assert "args: one two" in stdout and "user: xwvm" in stdout
    assert "reach server: yes" in stdout, stdout
    assert "reach lan: no" in stdout, stdout
    assert "reach host-service: no" in stdout and "reach other-port: no" in stdout, stdout
    assert "sudo: absent" in stdout and "shadow: unreadable" in stdout
    assert "ssh root password: exit 255" in stdout and "ssh user password: exit 255" in stdout
    assert "Permission denied (publickey)" in files["ssh-root.txt"], files["ssh-root.txt"]
    assert "Permission denied (publickey)" in files["ssh-user.txt"]
    # The submitter's key is the way in (applied by the appliance, which has no cloud-init).
    assert "key login as xwvm" in stdout and "ssh user key: exit 0" in stdout, \
        stdout + files.get("ssh-key.txt", "")
    # The delegated credential is root's alone: not in a file or on a device the payload
    # can read.
    assert "context: unreadable" in stdout and "cd: unreadable" in stdout, stdout
    assert "cidata mounted: 0" in stdout, stdout
    assert "oom agent: -1000" in stdout and "oom payload: 1000" in stdout, stdout  # OOM
    assert files["size.txt"].strip() == "1234"
    # The nested worker reached the server itself (its first beat); the exit code came to
    # the outer worker on the exchange disk, not through the server.
    assert grid.admin.get_work(job["uid"])["nested_seen_at"]


OFFLINE = """\
#!/bin/sh
echo "args: $*"
echo "user: $(id -un)"
echo "nics: $(ls /sys/class/net | tr '\\n' ' ')"
if python3 -c 'import socket; socket.create_connection(("10.0.2.100", 443), timeout=3)' \\
    2>/dev/null; then echo "server: reachable"; else echo "server: unreachable"; fi
wc -c < data.bin > size.txt
sha256sum data.bin | cut -d' ' -f1 > sum.txt
"""


def test_network_none_job_travels_on_the_exchange_disk(grid: Grid, tmp_path: Path) -> None:
    """No NIC at all: the inputs reach the guest and the results come back on the job's
    exchange disk, and the worker uploads them."""
    worker = vm_worker(grid, "vmw4")
    try:
        script = tmp_path / "offline.sh"
        script.write_text(OFFLINE)
        data = tmp_path / "data.bin"
        data.write_bytes(os.urandom(300_000))
        out = run_cli(["submit", "--template", "base", "--network", "none",
                       "--command", "sh offline.sh", "--input", str(script), "--input",
                       str(data), "--wall-clock", "600", "--wait", "--timeout", "900",
                       "--format", "json", "--", "a", "b"], grid.home, timeout=960,
                      check=False)
    finally:
        worker.stop()
    assert out.stdout, out.stderr + worker.log
    [job] = json.loads(out.stdout)
    assert job["status"] == "COMPLETED", job.get("error", "") + worker.log
    assert job["exit_code"] == 0
    files = results(grid.admin, job["uid"], tmp_path)
    stdout = files["stdout.txt"]
    assert "args: a b" in stdout and "user: xwvm" in stdout, stdout
    assert "nics: lo \n" in stdout, stdout  # no NIC but loopback
    assert "server: unreachable" in stdout, stdout
    assert files["size.txt"].strip() == "300000"
    assert files["sum.txt"].strip() == hashlib.sha256(data.read_bytes()).hexdigest()
    work_dir = grid.root / "vmw4"
    assert not list((work_dir / "vm").glob("*exchange*")), "exchange disk removed"
    hosts = json.loads(run_cli(["workers", "--format", "json"], grid.home).stdout)
    [host] = [h for h in hosts if h["name"] == "vmw4"]
    assert host["hypervisors"]["libvirt"]["networks"] == ["none", "server"]


def test_unsigned_template_is_never_sent_and_why_says_so(grid: Grid, tmp_path: Path) -> None:
    """Workers advertise the template keys they trust: a job on an unsigned template goes
    to none (no worker takes it to fail it: it waits, retries 0), and `xwvm why` says
    that no worker trusts a signer of its template. (A worker that got one anyway refuses
    it: tests/worker/test_vm_hostile_guest.py.)"""
    image = built_image("base")
    run_cli(["template", "push", str(image), "--version", "0.0.1-unsigned"], grid.home,
            timeout=600)
    run_cli(["template", "publish", "base:0.0.1-unsigned"], grid.home)
    job = grid.admin.submit(template="base:0.0.1-unsigned", command="true")
    worker = vm_worker(grid, "vmw2")
    try:
        eventually(lambda: "vmw2" in [h["name"] for h in grid.admin.list_hosts()
                                      if h["status"] == "alive"], timeout=120,
                   what="the worker registered")
        time.sleep(5)  # it asks for work every second or so when idle
        got = grid.admin.get_work(job["uid"])
        why = json.loads(run_cli(["why", job["uid"], "--format", "json"], grid.home).stdout)
    finally:
        worker.stop()
        grid.admin.work_action(job["uid"], "abort")
    assert (got["status"], got["retries"], got["host"]) == ("PENDING", 0, None), got
    assert "no worker trusts a key that signed template base:0.0.1-unsigned" in \
        why["summary"], why


def test_killed_worker_leaves_no_vm_and_job_is_rescheduled(grid: Grid, tmp_path: Path) -> None:
    work_dir = grid.root / "vmw3"
    worker = vm_worker(grid, "vmw3", work_dir)
    job = grid.admin.submit(template="base", command="sleep 20; echo slept", max_retries=3)
    uid = job["uid"]
    try:
        eventually(lambda: grid.admin.get_work(uid)["nested_seen_at"], timeout=300,
                   what="the nested worker's first beat")
        worker.stop(signal.SIGKILL)
        worker_id = (work_dir / "worker-id").read_text().strip()
        leftovers = [p for p in work_dir.iterdir() if p.name.startswith("xwvm_")]
        assert leftovers, "the killed worker left its VM folder"
        worker = vm_worker(grid, "vmw3", work_dir)  # same work dir: cleans up first
        eventually(lambda: not any(p.name.startswith("xwvm_") for p in work_dir.iterdir()),
                   timeout=120, what="leftover VM removed")
        doms = subprocess.run(["virsh", "-c", "qemu:///system", "list", "--all", "--name"],
                              capture_output=True, text=True).stdout
        assert not [d for d in doms.split() if d.startswith(f"xwvm_{worker_id}_{uid}")]
        [done] = grid.admin.wait([uid], timeout=600)
    finally:
        worker.stop()
    assert done["status"] == "COMPLETED" and done["retries"] >= 1
    assert results(grid.admin, uid, tmp_path)["stdout.txt"] == "slept\n"
