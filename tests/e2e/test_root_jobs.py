"""The HEP user's main job with real ROOT in real VMs: a macro reads an input .root file
and writes a histogram in a VM made from the ROOT template; a pilot VM serves ten ROOT
jobs and powers off when idle. Outputs are checked with uproot on the host."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import uproot

from tests.e2e.conftest import eventually
from tests.imagebuild.conftest import built_image
from tests.support.processes import ServerProcess, WorkerProcess, run_cli
from xwvm import signing
from xwvm.client.sdk import Client
from xwvm.worker.credential import Credential

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3000)]

MACRO = """\
void fill() {
  TFile in("events.root");
  TTree *t = in.Get<TTree>("events");
  if (!t) { printf("no TTree events in events.root\\n"); gSystem->Exit(2); }
  double x;
  t->SetBranchAddress("x", &x);
  TH1D h("h", "x", 20, 0.0, 10.0);
  for (Long64_t i = 0; i < t->GetEntries(); ++i) { t->GetEntry(i); h.Fill(x); }
  TRandom3 rng(42);
  TH1D g("g", "gauss", 40, -4.0, 4.0);
  for (int i = 0; i < 5000; ++i) g.Fill(rng.Gaus(0.0, 1.0));
  TFile out("hist.root", "RECREATE");
  h.Write(); g.Write(); out.Close();
  printf("entries %d %d\\n", (int)h.GetEntries(), (int)g.GetEntries());
}
"""


@dataclass
class RootGrid:
    server: ServerProcess
    admin: Client
    home: Path
    root: Path
    public_key: Path


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RootGrid]:
    proc = subprocess.run([str(REPO / "scripts" / "install-vm-host.sh")],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    image = built_image("root")
    root = Path(tempfile.mkdtemp(prefix="xwvm-e2e-root-", dir="/var/tmp"))
    root.chmod(0o711)
    server = ServerProcess(tmp_path_factory.mktemp("rootgrid")).init().start()
    home = root / "cli"
    try:
        run_cli(["login", "--server", server.url, "--ca", str(server.ca), "--user", "admin",
                 "--password-file", str(server.password_file)], home)
        keys = root / "keys"
        run_cli(["admin", "keygen", "-o", str(keys)], home)
        run_cli(["template", "push", str(image)], home, timeout=900)
        manifest = json.loads((image / "manifest.json").read_text())
        ref = f"{manifest['name']}:{manifest['version']}"
        run_cli(["template", "sign", ref, "--key", str(keys / signing.PRIVATE_KEY_FILE)], home)
        run_cli(["template", "publish", ref], home)
        run_cli(["app", "send", "root", "--shared"], home)
        yield RootGrid(server, server.client(), home, root, keys / signing.PUBLIC_KEY_FILE)
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def vm_worker(g: RootGrid, name: str) -> WorkerProcess:
    cred = g.admin.enroll_worker()
    path = g.root / f"{name}.cred"
    Credential(server=g.server.url, login=cred["login"], password=cred["password"],
               ca_pem=g.server.ca.read_text()).save(path)
    return WorkerProcess(g.root, path, name,
                         extra=["--hypervisor", "libvirt", "--trusted-key", str(g.public_key),
                                "--vm-hang-timeout", "300"]).start()


def events_file(path: Path, seed: int, n: int = 1000) -> np.ndarray:
    x = np.random.default_rng(seed).uniform(0.0, 10.0, n)
    with uproot.recreate(path) as f:  # a TTree (assigning a dict would write an RNTuple)
        f.mktree("events", {"x": "f8"}).extend({"x": x})
    return x


def check_hist(archive: Path, x: np.ndarray, dest: Path) -> str:
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    with uproot.open(dest / "hist.root") as f:
        h, g = f["h"], f["g"]
        expected, _ = np.histogram(x, bins=20, range=(0.0, 10.0))
        assert np.array_equal(h.values(), expected.astype(float))
        assert g.values().sum() == 5000 and abs(float(g.axis().centers() @ g.values()) / 5000) < 0.1
    return (dest / "stdout.txt").read_text()


def job_output(admin: Client, job: dict, tmp: Path) -> str:
    """A failed job's error, stdout and stderr, for the assertion message."""
    text = f"{job['status']}: {job.get('error')}\n"
    if job.get("result"):
        with tarfile.open(admin.download_result(job["uid"], tmp / "failed.tgz")) as tar:
            for name in ("stdout.txt", "stderr.txt"):
                text += f"--- {name}\n" + tar.extractfile(name).read().decode()  # type: ignore[union-attr]
    return text


def test_root_macro_in_a_vm(grid: RootGrid, tmp_path: Path) -> None:
    macro = tmp_path / "fill.C"
    macro.write_text(MACRO)
    x = events_file(tmp_path / "events.root", seed=1)
    worker = vm_worker(grid, "rootw1")
    try:
        out = run_cli(["submit", "--template", "root", "--macro", str(macro), "--input",
                       str(tmp_path / "events.root"), "--wall-clock", "30m", "--wait",
                       "--timeout", "1500", "--format", "json"], grid.home, timeout=1600,
                      check=False)
    finally:
        worker.stop()
    [job] = json.loads(out.stdout)
    assert job["status"] == "COMPLETED", job_output(grid.admin, job, tmp_path) + worker.log
    run_cli(["results", job["uid"], "-o", str(tmp_path / "out")], grid.home)
    archive = grid.admin.download_result(job["uid"], tmp_path / "r.tgz")
    assert "entries 1000 5000" in check_hist(archive, x, tmp_path / "check")


def test_pilot_vm_serves_ten_root_jobs(grid: RootGrid, tmp_path: Path) -> None:
    macro = tmp_path / "fill.C"
    macro.write_text(MACRO)
    out = run_cli(["submit", "--template", "root", "--pilot", "--pilot-idle", "40",
                   "--count", "1", "--wall-clock", "1h", "--format", "json"], grid.home)
    [submitted] = json.loads(out.stdout)
    assert (submitted["pilot"], submitted["pilot_idle_s"], submitted["wall_clock_s"]) == \
        (True, 40, 3600)
    pilot = submitted["uid"]
    worker = vm_worker(grid, "rootw2")
    inputs = {}
    try:
        eventually(lambda: grid.admin.get_work(pilot)["nested_seen_at"], timeout=600,
                   what="the pilot's nested worker")
        for i in range(10):
            part = tmp_path / f"part-{i:02d}"
            part.mkdir()
            x = events_file(part / "events.root", seed=100 + i)
            m = part / "fill.C"
            m.write_text(MACRO)
            out = run_cli(["submit", "root", "--macro", str(m), "--input",
                           str(part / "events.root"), "--format", "json"], grid.home)
            inputs[json.loads(out.stdout)[0]["uid"]] = (x, part)
        done = grid.admin.wait(list(inputs), timeout=1800)
        [pilot_done] = grid.admin.wait([pilot], timeout=600)  # idle → poweroff → done
    finally:
        worker.stop()
    assert [w["status"] for w in done] == ["COMPLETED"] * 10, \
        [job_output(grid.admin, w, tmp_path) for w in done if w["status"] != "COMPLETED"]
    assert {w["pilot_uid"] for w in done} == {pilot}
    for w in done:
        x, part = inputs[w["uid"]]
        archive = grid.admin.download_result(w["uid"], part / "r.tgz")
        assert "entries 1000 5000" in check_hist(archive, x, part / "check")
    assert pilot_done["status"] == "COMPLETED"
    with tarfile.open(grid.admin.download_result(pilot, tmp_path / "p.tgz")) as tar:
        served = json.loads(tar.extractfile("served.json").read())  # type: ignore[union-attr]
    assert sorted(s["uid"] for s in served) == sorted(inputs)
    assert not os.path.exists(grid.root / "rootw2" / "vm" / f"{pilot}-context.iso")
