"""A real build of templates/base.yaml: artifacts, the image's contents (read without
booting, with debugfs), and a real boot under QEMU/TCG to poweroff."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from contextualizer.iso import pack_files
from xwvm.client.imagebuild import Manifest, verify
from xwvm.client.imagebuild.spec import ROOT_LABEL

REPO = Path(__file__).resolve().parents[2]
BOOT_TIMEOUT = 300


def debugfs(raw: Path, request: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["debugfs", "-R", request, str(raw)], capture_output=True, text=True,
                          timeout=60, check=False)


def cat(raw: Path, path: str) -> str:
    proc = debugfs(raw, f"cat {path}")
    assert "not found" not in proc.stderr, f"{path} is not in the image"
    return proc.stdout


def exists(raw: Path, path: str) -> bool:
    return "File not found" not in debugfs(raw, f"stat {path}").stderr


def mode(raw: Path, path: str) -> int:
    match = re.search(r"Mode:\s+(\d+)", debugfs(raw, f"stat {path}").stdout)
    assert match, f"no mode for {path}"
    return int(match.group(1), 8)


def test_manifest_matches_the_files(base_image: Path) -> None:
    manifest = Manifest.load(base_image)
    assert verify(base_image) == []
    assert manifest.name == "base" and manifest.format == 1
    files = {a.file for a in manifest.artifacts}
    assert {"disk.qcow2", "disk.vdi", "disk.raw", "vmlinuz", "initrd.img",
            "packages.txt"} <= files
    assert manifest.cmdline.split()[:4] == [f"root=LABEL={ROOT_LABEL}", "ro", "console=ttyS0",
                                            "init=/opt/xwvm/init"]
    assert manifest.versions["python3"].startswith("3.11.")
    assert manifest.versions["kernel"].endswith("-cloud-amd64")
    assert manifest.packages["count"] > 100
    assert all(c["ok"] for c in manifest.checks) and manifest.checks
    assert set(manifest.build["steps"]) >= {"rootfs", "ext4", "convert-qcow2", "convert-vdi"}
    listed = (base_image / "packages.txt").read_text().splitlines()
    assert any(line.startswith("openssh-server\t") for line in listed)
    assert not any(line.startswith("sudo\t") for line in listed)


@pytest.mark.parametrize("fmt", ["qcow2", "vdi", "raw"])
def test_disk_formats(base_image: Path, fmt: str) -> None:
    manifest = Manifest.load(base_image)
    artifact = manifest.artifact("disk", fmt)
    info = json.loads(subprocess.run(
        ["qemu-img", "info", "--output=json", str(base_image / artifact.file)],
        capture_output=True, text=True, check=True).stdout)
    assert info["format"] == fmt
    assert info["virtual-size"] == artifact.virtual_size == 2048 * 2**20


def test_filesystem_label(base_image: Path) -> None:
    raw = base_image / "disk.raw"
    probe = subprocess.run(["blkid", "-p", "-o", "export", str(raw)], capture_output=True,
                           text=True, check=True).stdout
    assert f"LABEL={ROOT_LABEL}" in probe.splitlines() and "TYPE=ext4" in probe.splitlines()


def test_accounts_are_locked(base_image: Path) -> None:
    shadow = {line.split(":")[0]: line.split(":")[1]
              for line in cat(base_image / "disk.raw", "/etc/shadow").splitlines() if line}
    assert shadow["root"].startswith(("!", "*"))
    assert shadow["xwvm"].startswith(("!", "*"))
    # No account anywhere has a usable password.
    assert all(pw.startswith(("!", "*")) for pw in shadow.values())


def test_ssh_is_keys_only_without_root(base_image: Path) -> None:
    raw = base_image / "disk.raw"
    listing = debugfs(raw, "ls /etc/ssh/sshd_config.d").stdout.split()
    confs = [name for name in listing if name.endswith(".conf")]
    assert confs
    text = "".join(cat(raw, f"/etc/ssh/sshd_config.d/{name}") for name in confs)
    assert "PasswordAuthentication no" in text and "PermitRootLogin no" in text
    assert "KbdInteractiveAuthentication no" in text
    assert "Include /etc/ssh/sshd_config.d/*.conf" in cat(raw, "/etc/ssh/sshd_config")
    # Host keys are made per VM at boot, never shipped in the template.
    assert not exists(raw, "/etc/ssh/ssh_host_ed25519_key")


def test_no_way_to_root(base_image: Path) -> None:
    raw = base_image / "disk.raw"
    assert not exists(raw, "/usr/bin/sudo")
    assert not exists(raw, "/etc/sudoers.d")
    assert mode(raw, "/usr/bin/su") & 0o6000 == 0
    assert mode(raw, "/usr/bin/passwd") & 0o6000 == 0
    assert "/usr/bin/su" in Manifest.load(base_image).hardening["setuid_removed"]


def test_appliance_is_installed(base_image: Path) -> None:
    raw = base_image / "disk.raw"
    assert mode(raw, "/opt/xwvm/init") & 0o111 == 0o111
    assert cat(raw, "/opt/xwvm/init").startswith("#!/bin/sh")
    assert exists(raw, "/opt/xwvm/lib/xwvm/__init__.py")
    assert exists(raw, "/opt/xwvm/lib/contextualizer/__init__.py")
    assert exists(raw, "/opt/xwvm/lib/contextualizer/model.py")
    assert not exists(raw, "/opt/xwvm/lib/contextualizer/iso.py")  # the reader only
    assert not exists(raw, "/opt/xwvm/lib/appliance/rootfs")
    assert exists(raw, "/opt/xwvm/lib/xwvm/protocol/__init__.py")
    assert not exists(raw, "/opt/xwvm/lib/xwvm/server")  # the guest package only
    agent = cat(raw, "/opt/xwvm/bin/xwvm-agent")
    assert mode(raw, "/opt/xwvm/bin/xwvm-agent") & 0o111 == 0o111
    assert "python3 -m appliance.agent" in agent
    assert "PYTHONPATH=/opt/xwvm/lib" in cat(raw, "/opt/xwvm/env")
    assert "xwvm:" in cat(raw, "/etc/passwd")
    assert cat(raw, "/etc/hostname").strip() == "xwvm"
    # Docs and apt's lists are left out of the image.
    assert not exists(raw, "/usr/share/man/man1")
    assert debugfs(raw, "ls /var/lib/apt/lists").stdout.count("_") == 0


def test_initramfs_is_the_appliances_own_and_small(base_image: Path, tmp_path: Path) -> None:
    """templates/base.yaml asks for the xwvm initramfs: busybox, the virtio drivers and
    appliance/initramfs-init, nothing of udev (cpio, the real reader, unpacks it)."""
    data = (base_image / "initrd.img").read_bytes()
    assert data[:2] == b"\x1f\x8b"  # one gzip'd cpio
    assert len(data) < 4 * 2**20  # unpacked on every boot
    out = tmp_path / "initrd"
    out.mkdir()
    subprocess.run(["cpio", "-id", "--quiet"], input=gzip.decompress(data), cwd=out,
                   check=True)
    assert (out / "init").read_bytes() == (REPO / "appliance" / "initramfs-init").read_bytes()
    loaded = (out / "etc" / "modules.load").read_text().split()
    for module in ("virtio_blk.ko", "virtio_pci.ko", "virtio_net.ko", "sr_mod.ko"):
        assert module in loaded, loaded
    assert loaded.index("cdrom.ko") < loaded.index("sr_mod.ko")  # dependencies first
    assert sorted(p.name for p in (out / "lib" / "modules").iterdir()) == sorted(loaded)
    assert (out / "bin" / "busybox").stat().st_mode & 0o111
    assert not list(out.rglob("*udev*"))


def init_markers(console: str) -> list[str]:
    return [m.strip() for m in re.findall(r"xwvm-init: [^\r\n]*", console)]


def boot(image: Path, tmp_path: Path, extra: list[str]) -> tuple[str, float, int]:
    manifest = Manifest.load(image)
    overlay = tmp_path / "overlay.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                    str(image / "disk.qcow2"), str(overlay)], check=True)
    cmd = ["qemu-system-x86_64", "-accel", "tcg", "-m", "512", "-nographic",
           "-kernel", str(image / "vmlinuz"), "-initrd", str(image / "initrd.img"),
           "-append", manifest.cmdline,
           "-drive", f"file={overlay},if=virtio,format=qcow2", "-nic", "none", "-no-reboot",
           *extra]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=BOOT_TIMEOUT,
                          stdin=subprocess.DEVNULL, check=False)
    return proc.stdout + proc.stderr, time.monotonic() - t0, proc.returncode


def test_boot_without_context_powers_off(base_image: Path, tmp_path: Path,
                                         record_property: pytest.RecordProperty) -> None:
    before = (base_image / "disk.qcow2").stat().st_mtime_ns
    console, seconds, rc = boot(base_image, tmp_path, [])
    record_property("boot_to_poweroff_s", round(seconds, 1))
    print(f"base image: boot to poweroff under TCG in {seconds:.1f} s")
    assert rc == 0, console
    markers = init_markers(console)
    assert markers[0] == "xwvm-init: start", console
    assert "xwvm-init: no network" in markers and "xwvm-init: no context" in markers, console
    assert markers[-1].startswith("xwvm-init: poweroff"), console
    assert "Power down" in console or "reboot: Power down" in console
    assert (base_image / "disk.qcow2").stat().st_mtime_ns == before  # template untouched


def test_boot_with_context_cd_runs_the_agent(base_image: Path, tmp_path: Path) -> None:
    context = {"format": "xwvm-test-unsupported", "note": "builder boot test"}
    iso = tmp_path / "context.iso"
    iso.write_bytes(pack_files({"meta-data": b"instance-id: build-test\n",
                                "user-data": b"#cloud-config\n",
                                "xwvm/context.json": json.dumps(context).encode()}))
    console, _seconds, rc = boot(base_image, tmp_path, ["-cdrom", str(iso)])
    assert rc == 0, console
    markers = init_markers(console)
    assert "xwvm-init: context found" in markers, console
    assert any(m.startswith("xwvm-init: agent exit ") or m == "xwvm-init: no agent"
               for m in markers), console
    assert markers[-1].startswith("xwvm-init: poweroff"), console
