"""The context's guest section applied by the appliance (no cloud-init): SSH keys for the
payload user, small files where the schema allows them; on a scratch root folder, as the
user running the tests stands in for the payload user."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from appliance import guest
from contextualizer.model import GuestFile, JobContext, Limits, Payload

ME = pwd.getpwuid(os.getuid()).pw_name


def ctx(**kw: object) -> JobContext:
    return JobContext(job_uid="j1", owner="alice", app="base", mode="single",  # type: ignore[arg-type]
                      server_url="https://xwvm-server:443", server_ca_pem="ca",
                      credential="secret", payload=Payload(command="true"),
                      limits=Limits(wall_clock_seconds=60, cpus=1, memory_mb=256, disk_mb=1),
                      **kw)  # type: ignore[arg-type]


def home(root: Path) -> Path:
    return root / pwd.getpwnam(ME).pw_dir.lstrip("/")


def test_keys_become_the_users_authorized_keys(tmp_path: Path) -> None:
    keys = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE0 a@b", "ssh-rsa AAAAB3Nza c@d  ")
    guest.apply(ctx(ssh_authorized_keys=keys), ME, tmp_path)
    target = home(tmp_path) / ".ssh" / "authorized_keys"
    assert target.read_text() == f"{keys[0]}\n{keys[1].strip()}\n"
    assert target.stat().st_mode & 0o777 == 0o600
    assert target.parent.stat().st_mode & 0o777 == 0o700
    assert target.stat().st_uid == os.getuid()
    guest.apply(ctx(ssh_authorized_keys=keys[:1]), ME, tmp_path)  # idempotent, replaced
    assert target.read_text().count("\n") == 1


def test_no_keys_writes_nothing(tmp_path: Path) -> None:
    guest.apply(ctx(), ME, tmp_path)
    assert not (home(tmp_path) / ".ssh").exists()


def test_files_are_written_with_their_mode(tmp_path: Path) -> None:
    files = (GuestFile("/etc/xwvm/site.conf", "a=1\n", "0640"),
             GuestFile("/home/xwvm/cfg/run.sh", "echo hi\n", "0755"))
    guest.apply(ctx(files=files), ME, tmp_path)
    site = tmp_path / "etc/xwvm/site.conf"
    assert site.read_text() == "a=1\n" and site.stat().st_mode & 0o7777 == 0o640
    run = tmp_path / "home/xwvm/cfg/run.sh"
    assert run.read_text() == "echo hi\n" and run.stat().st_mode & 0o7777 == 0o755


@pytest.mark.parametrize("item, message", [
    (GuestFile("/etc/passwd", "x"), "outside"),
    (GuestFile("/home/xwvm/../../etc/shadow", "x"), "outside"),
    (GuestFile("/home/xwvm/x", "x", "4755"), "not allowed"),
])
def test_files_outside_the_schema_are_refused(tmp_path: Path, item: GuestFile,
                                              message: str) -> None:
    with pytest.raises(guest.GuestSetupError, match=message):
        guest.apply(ctx(files=(item,)), ME, tmp_path)
    assert not (tmp_path / "etc/passwd").exists()


def test_a_planted_link_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / "home/xwvm").mkdir(parents=True)
    (tmp_path / "home/xwvm/f").symlink_to(victim)
    with pytest.raises(guest.GuestSetupError, match="symbolic link"):
        guest.apply(ctx(files=(GuestFile("/home/xwvm/f", "evil"),)), ME, tmp_path)
    assert victim.read_text() == "keep"
