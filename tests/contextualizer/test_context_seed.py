"""Tests of the rendered NoCloud files: golden files, cloud-init's own checks, secrets."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from ctx_testdata import CREDENTIAL, GOLDEN

from contextualizer import NetworkPolicy
from contextualizer.seed import render_seed
from xwvm.protocol.hardening import FORBIDDEN_PACKAGES, FORBIDDEN_PROGRAMS

GOLDEN_NAMES = {
    "user-data": "user-data",
    "meta-data": "meta-data",
    "network-config": "network-config",
    "xwvm/context.json": "context.json",
}


@pytest.mark.parametrize("name", sorted(GOLDEN_NAMES))
def test_golden_files(ctx, name: str) -> None:
    rendered = render_seed(ctx)[name]
    golden = GOLDEN / GOLDEN_NAMES[name]
    if os.environ.get("XWVM_UPDATE_GOLDEN") == "1":
        golden.write_bytes(rendered)
    assert rendered == golden.read_bytes(), (
        f"{name} differs from {golden}; if the change is intended, rerun with XWVM_UPDATE_GOLDEN=1"
    )


def cloud_init_schema(cloud_init: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [cloud_init, "schema", "-c", str(path)], capture_output=True, text=True, timeout=120
    )


def test_user_data_passes_cloud_init_schema(ctx, cloud_init: str, tmp_path: Path) -> None:
    path = tmp_path / "user-data"
    path.write_bytes(render_seed(ctx)["user-data"])
    result = cloud_init_schema(cloud_init, path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Valid cloud-config" in result.stdout


def test_cloud_init_schema_rejects_broken_user_data(ctx, cloud_init: str, tmp_path: Path) -> None:
    doc = yaml.safe_load(render_seed(ctx)["user-data"])
    doc["users"][0]["lock_passwd"] = "not-a-boolean"
    doc["ssh_pwauth"] = 3
    path = tmp_path / "user-data"
    path.write_text("#cloud-config\n" + yaml.safe_dump(doc))
    result = cloud_init_schema(cloud_init, path)
    assert result.returncode != 0
    assert "ssh_pwauth" in result.stdout + result.stderr


def test_user_data_hardening(ctx) -> None:
    text = render_seed(ctx)["user-data"]
    assert text.startswith(b"#cloud-config\n")
    doc = yaml.safe_load(text)
    assert doc["disable_root"] is True
    assert doc["ssh_pwauth"] is False
    [user] = doc["users"]  # no "default": the image's sudo-capable user is not created
    assert user["name"] == "xwvm"
    assert user["lock_passwd"] is True
    assert "sudo" not in user and "groups" not in user
    assert user["ssh_authorized_keys"] == list(ctx.ssh_authorized_keys)
    commands = [" ".join(c) for c in doc["runcmd"]]
    assert any("/etc/sudoers.d/*" in c for c in commands)
    assert any("--purge sudo" in c for c in commands)
    assert doc["runcmd"][-1] == ["/opt/xwvm/bin/xwvm-agent", "--context", "/run/xwvm/context.json"]


def test_stock_images_lose_every_privilege_tool_of_the_one_list(ctx) -> None:
    commands = [" ".join(c) for c in yaml.safe_load(render_seed(ctx)["user-data"])["runcmd"]]
    for pkg in FORBIDDEN_PACKAGES:
        assert any(f"--purge {pkg} " in c for c in commands), pkg
    strip = next(c for c in commands if "chmod u-s,g-s" in c)
    assert all(f"/{prog} " in strip for prog in FORBIDDEN_PROGRAMS)
    assert "/usr/bin/su " in strip and "/usr/sbin/doas " in strip


def test_agent_command_is_a_parameter(ctx) -> None:
    custom = replace(ctx, agent_command=("/usr/local/bin/agent", "--once"))
    doc = yaml.safe_load(render_seed(custom)["user-data"])
    assert doc["runcmd"][-1] == ["/usr/local/bin/agent", "--once"]


def test_files_written_after_user_creation(ctx) -> None:
    doc = yaml.safe_load(render_seed(ctx)["user-data"])
    by_path = {f["path"]: f for f in doc["write_files"]}
    assert by_path["/home/xwvm/run.sh"]["content"] == "#!/bin/sh\nroot -b -q fit.C\n"
    assert by_path["/home/xwvm/run.sh"]["owner"] == "xwvm:xwvm"
    assert by_path["/home/xwvm/run.sh"]["permissions"] == "0755"
    assert by_path["/etc/xwvm/site.conf"]["owner"] == "root:root"
    assert all(f["defer"] is True for f in doc["write_files"])


def test_meta_data_carries_job_uid_and_hostname(ctx) -> None:
    meta = yaml.safe_load(render_seed(ctx)["meta-data"])
    assert meta == {"instance-id": ctx.job_uid, "local-hostname": "alice-fit"}


def test_secrets_only_in_context_json(ctx) -> None:
    files = render_seed(ctx)
    for name in ("user-data", "meta-data", "network-config"):
        assert CREDENTIAL.encode() not in files[name], name
        assert b"user-secret-42" not in files[name], name
    doc = json.loads(files["xwvm/context.json"])
    assert doc["credential"] == CREDENTIAL
    assert doc["guest"]["env"]["API_TOKEN"] == "user-secret-42"


def test_redacted_view_and_repr_hide_secrets(ctx) -> None:
    shown = json.dumps(ctx.redacted()) + repr(ctx)
    assert CREDENTIAL not in shown
    assert "user-secret-42" not in shown
    assert "#!/bin/sh" not in shown  # file contents are summarised as sizes
    assert ctx.redacted()["job"]["uid"] == ctx.job_uid
    assert sorted(ctx.redacted()["guest"]["env"]) == ["API_TOKEN", "NEVENTS", "ROOT_MACRO"]


def parse_network_config(python: str, text: bytes) -> list:
    """Interfaces as cloud-init's own network_state parser sees them."""
    script = (
        "import json, sys, yaml\n"
        "from cloudinit.net import network_state\n"
        "ns = network_state.parse_net_config_data(yaml.safe_load(sys.stdin.read()))\n"
        "print(json.dumps([[i['name'], [s['type'] for s in i['subnets']]]"
        " for i in ns.iter_interfaces()]))\n"
    )
    result = subprocess.run(
        [python, "-c", script], input=text.decode(), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("policy", [NetworkPolicy.SERVER, NetworkPolicy.INTERNET])
def test_network_dhcp_on_first_nic(ctx, policy, cloud_init_python: str) -> None:
    text = render_seed(replace(ctx, network=policy))["network-config"]
    assert yaml.safe_load(text) == {
        "version": 2,
        "ethernets": {"nic0": {"match": {"name": "e*"}, "dhcp4": True}},
    }
    assert parse_network_config(cloud_init_python, text) == [["nic0", ["dhcp4"]]]


def test_network_none_has_no_interfaces(ctx, cloud_init_python: str) -> None:
    text = render_seed(replace(ctx, network=NetworkPolicy.NONE))["network-config"]
    assert yaml.safe_load(text) == {"version": 2, "ethernets": {}}
    assert parse_network_config(cloud_init_python, text) == []
