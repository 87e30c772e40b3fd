"""packer/*.json: generated from the specs, checked in, accepted by Packer 1.6.6 itself."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from xwvm.client.imagebuild.packer import packer_template, provision_environment
from xwvm.client.imagebuild.spec import load_spec
from xwvm.protocol.hardening import FORBIDDEN_PACKAGES

SOURCE_ROOT = Path(__file__).resolve().parents[2]  # the checkout: packer/ lives there
PACKER_DIR = SOURCE_ROOT / "packer"
NAMES = ["base", "root"]


@pytest.mark.parametrize("name", NAMES)
def test_checked_in_template_is_the_generated_one(name: str) -> None:
    spec = load_spec(SOURCE_ROOT / "templates" / f"{name}.yaml")
    checked_in = json.loads((PACKER_DIR / f"{name}.json").read_text())
    assert checked_in == packer_template(spec), (
        f"packer/{name}.json is stale: run xwvm template packer templates/{name}.yaml "
        f"-o packer/{name}.json")


@pytest.mark.parametrize("name", NAMES)
def test_provisioning_matches_the_spec(name: str) -> None:
    spec = load_spec(SOURCE_ROOT / "templates" / f"{name}.yaml")
    template = json.loads((PACKER_DIR / f"{name}.json").read_text())
    assert {b["type"] for b in template["builders"]} == {"qemu", "virtualbox-iso"}
    for builder in template["builders"]:
        assert builder["disk_size"] == spec.size_mb
        assert builder["memory"] >= spec.min_memory_mb
    shell = next(p for p in template["provisioners"] if p.get("script", "").endswith(
        "provision.sh"))
    env = dict(v.split("=", 1) for v in shell["environment_vars"])
    assert env["XWVM_PACKAGES"].split() == list(spec.all_packages)
    assert env["XWVM_PIP_PACKAGES"].split() == list(spec.pip_packages)
    assert env["XWVM_USER"] == spec.user
    assert shell["environment_vars"] == provision_environment(spec)
    uploads = {p["source"] for p in template["provisioners"] if p["type"] == "file"}
    assert "{{user `source_dir`}}/appliance/rootfs/" in uploads
    assert "{{user `source_dir`}}/appliance/init" in uploads


def test_provision_scripts_apply_the_hardening() -> None:
    provision = (PACKER_DIR / "scripts" / "provision.sh").read_text()
    finish = (PACKER_DIR / "scripts" / "finish.sh").read_text()
    for needed in ('passwd --lock root', 'passwd --lock "$XWVM_USER"',
                   "PasswordAuthentication no", "PermitRootLogin no", "chmod ug-s",
                   "/opt/xwvm/bin/xwvm-agent", "e2label"):
        assert needed in provision, needed
    assert "apt-get purge -y -qq $installed" in finish and "/etc/sudoers.d/*" in finish
    assert "forbidden=${XWVM_FORBIDDEN_PACKAGES:?" in finish
    for script in ("provision.sh", "finish.sh"):
        subprocess.run(["sh", "-n", str(PACKER_DIR / "scripts" / script)], check=True)


@pytest.mark.parametrize("name", NAMES)
def test_finish_is_told_every_forbidden_package(name: str) -> None:
    """finish.sh purges the protocol's whole list, not sudo alone."""
    template = json.loads((PACKER_DIR / f"{name}.json").read_text())
    for builder in template["builders"]:
        command = builder["shutdown_command"]
        told = re.search(r"XWVM_FORBIDDEN_PACKAGES='([^']*)' sh /tmp/xwvm-src/finish\.sh$",
                         command)
        assert told, command
        assert tuple(told.group(1).split()) == FORBIDDEN_PACKAGES


@pytest.mark.parametrize("name", NAMES)
def test_packer_validate(name: str) -> None:
    """Full validation, offline: the remote checksum files are replaced by 'none'
    (Packer 1.6 fetches `file:` checksum URLs while preparing)."""
    packer = shutil.which("packer")
    assert packer, "packer is not installed (scripts/install-system.sh installs it)"
    proc = subprocess.run([packer, "validate", "-var", "cloud_image_checksum=none",
                           "-var", "iso_checksum=none", f"{name}.json"],
                          cwd=PACKER_DIR, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    syntax = subprocess.run([packer, "validate", "-syntax-only", f"{name}.json"],
                            cwd=PACKER_DIR, capture_output=True, text=True, timeout=120)
    assert syntax.returncode == 0, syntax.stdout + syntax.stderr


def test_cli_writes_the_template(tmp_path: Path) -> None:
    from tests.support.processes import run_cli
    out = tmp_path / "base.json"
    run_cli(["template", "packer", str(SOURCE_ROOT / "templates" / "base.yaml"), "-o",
             str(out)], tmp_path)
    assert json.loads(out.read_text()) == json.loads((PACKER_DIR / "base.json").read_text())
