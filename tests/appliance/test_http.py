"""The guest's stdlib HTTP client against a real server, as a nested worker uses it: the
delegated token of a VM job a worker took, TLS pinned to the context's CA, downloads
checked against their sha256, the results uploaded, errors carrying the HTTP status."""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

import pytest

from appliance.errors import GuestError
from appliance.http import Server
from tests.support.processes import ServerProcess
from tests.templates.conftest import MiB, push, random_file
from tests.templates.test_delegation import vm_capable_worker
from xwvm.protocol import paths
from xwvm.protocol.retry import Backoff

QUICK = Backoff(first=0.01, attempts=2)


def test_a_nested_workers_calls_with_its_delegated_token(shared_server: ServerProcess,
                                                         tmp_path: Path) -> None:
    admin = shared_server.client()
    push(admin, "http-tpl", "1.0", {"disk": random_file(tmp_path / "d.qcow2", MiB)})
    data = tmp_path / "in.txt"
    data.write_text("input for the VM")
    inp = admin.upload_data(data, access_rights="700")
    job = admin.submit(template="http-tpl", command="cat in.txt",
                       inputs=[{"data": inp["uid"], "name": "in.txt"}])
    worker, host = vm_capable_worker(shared_server, admin, "http-h1")
    desc = worker.request_work(host)["work"]
    guest = Server(shared_server.url, shared_server.ca, desc["delegated_token"], backoff=QUICK)

    got = guest.download(inp["uid"], tmp_path / "got.txt", inp["sha256"])
    assert got.read_text() == "input for the VM"
    with pytest.raises(GuestError) as e:
        guest.download(inp["uid"], tmp_path / "bad.txt", hashlib.sha256(b"x").hexdigest())
    assert e.value.code == "checksum_mismatch"
    assert not (tmp_path / "bad.txt").exists() and not (tmp_path / "bad.txt.part").exists()
    assert guest.post(paths.work_progress(job["uid"]), {"phase": "running"})["stop"] is False
    with pytest.raises(GuestError) as e:
        guest.report(job["uid"], "COMPLETED", 0, None)  # the outer worker's, not the guest's
    assert e.value.status == 403

    archive = tmp_path / "r.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(data, arcname="stdout.txt")
    guest.upload_result(job["uid"], archive)
    assert worker.report(job["uid"], "COMPLETED", 0)["status"] == "COMPLETED"
    with pytest.raises(GuestError) as e:
        guest.post(paths.work_progress(job["uid"]), {"phase": "running"})
    assert (e.value.status, e.value.code) == (401, "token_revoked")


def test_only_the_contexts_ca_is_trusted(shared_server: ServerProcess, tmp_path: Path) -> None:
    other_ca = Path("/etc/ssl/certs/ca-certificates.crt")  # the public CAs: not the server's
    guest = Server(shared_server.url, other_ca, "token", backoff=QUICK)
    with pytest.raises(GuestError) as e:
        guest.post(paths.work_progress("x"))
    assert (e.value.status, e.value.code) == (0, "tls_error")


def test_no_answer_is_status_0_after_the_retries(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text(Path("/etc/ssl/certs/ca-certificates.crt").read_text())
    guest = Server("https://127.0.0.1:9", ca, "token", timeout=2, backoff=QUICK)
    with pytest.raises(GuestError) as e:
        guest.post(paths.work_progress("x"))
    assert (e.value.status, e.value.code) == (0, "unreachable")
    with pytest.raises(GuestError, match="must be https"):
        Server("http://127.0.0.1:9", ca, "token")
