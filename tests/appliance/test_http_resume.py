"""The guest's download resumes: a transfer cut mid-way (here by a TCP relay between the
guest and a real server) continues from its partial file with Range and If-Range, and a
partial file that is not a prefix of the data is thrown away and fetched afresh."""

from __future__ import annotations

import contextlib
import socket
import threading
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from appliance.http import Server
from tests.support.processes import ServerProcess
from tests.templates.conftest import MiB, push, random_file
from tests.templates.test_delegation import vm_capable_worker
from xwvm.protocol.digest import sha256_file
from xwvm.protocol.retry import Backoff

SIZE = 3 * MiB
CUT = MiB  # bytes the relay lets through on its first connection


class CuttingRelay:
    """Relays TCP to ``upstream``; its first connection is cut after ``cut`` bytes came
    down. ``down[i]``: the bytes the i-th connection carried from the server."""

    def __init__(self, upstream: tuple[str, int], cut: int) -> None:
        self.upstream, self.cut = upstream, cut
        self.down: list[int] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            self.down.append(0)
            threading.Thread(target=self._serve, args=(client, len(self.down) - 1),
                             daemon=True).start()

    def _serve(self, client: socket.socket, index: int) -> None:
        up = socket.create_connection(self.upstream)
        threading.Thread(target=self._pipe, args=(client, up, None, None),
                         daemon=True).start()
        self._pipe(up, client, index, self.cut if index == 0 else None)

    def _pipe(self, src: socket.socket, dst: socket.socket, index: int | None,
              budget: int | None) -> None:
        try:
            while data := src.recv(65536):
                if index is not None and budget is not None:
                    data = data[:budget - self.down[index]]
                dst.sendall(data)
                if index is not None:
                    self.down[index] += len(data)
                    if budget is not None and self.down[index] >= budget:
                        break
        except OSError:
            pass
        finally:  # shutdown first: a close alone leaves the other thread's recv hanging
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def guest_and_data(shared_server: ServerProcess, tmp_path: Path
                   ) -> tuple[ServerProcess, str, dict[str, str], Path]:
    """A delegated token of a VM job with a 3 MiB input, the input and its local copy."""
    admin = shared_server.client()
    tpl = f"resume-{uuid.uuid4().hex[:8]}"
    push(admin, tpl, "1.0", {"disk": random_file(tmp_path / "d.qcow2", MiB)})
    data = random_file(tmp_path / "in.bin", SIZE)
    inp = admin.upload_data(data, access_rights="700")
    admin.submit(template=tpl, command="true",
                 inputs=[{"data": inp["uid"], "name": "in.bin"}])
    worker, host = vm_capable_worker(shared_server, admin, tpl)
    token = worker.request_work(host)["work"]["delegated_token"]
    return shared_server, token, inp, data


def test_a_download_cut_mid_way_resumes_where_it_stopped(
        guest_and_data: tuple[ServerProcess, str, dict[str, str], Path],
        tmp_path: Path) -> None:
    server, token, inp, data = guest_and_data
    url = urlsplit(server.url)
    relay = CuttingRelay((url.hostname or "127.0.0.1", url.port or 443), CUT)
    try:
        guest = Server(f"https://{url.hostname}:{relay.port}", server.ca, token,
                       backoff=Backoff(first=0.01, attempts=3))
        got = guest.download(inp["uid"], tmp_path / "got.bin", inp["sha256"])
    finally:
        relay.close()
    assert sha256_file(got) == sha256_file(data)
    assert not got.with_name("got.bin.part").exists()
    assert len(relay.down) == 2 and relay.down[0] == CUT, relay.down
    # the second transfer carried the rest only (and its headers), not the whole file
    assert relay.down[1] < SIZE - CUT // 2, relay.down


def test_a_partial_file_that_is_not_a_prefix_is_fetched_afresh(
        guest_and_data: tuple[ServerProcess, str, dict[str, str], Path],
        tmp_path: Path) -> None:
    server, token, inp, data = guest_and_data
    (tmp_path / "got.bin.part").write_bytes(b"\x00" * 1000)  # an earlier attempt, damaged
    guest = Server(server.url, server.ca, token, backoff=Backoff(first=0.01, attempts=2))
    got = guest.download(inp["uid"], tmp_path / "got.bin", inp["sha256"])
    assert sha256_file(got) == sha256_file(data)
    assert not got.with_name("got.bin.part").exists()
