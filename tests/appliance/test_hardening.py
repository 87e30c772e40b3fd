"""The agent's boot-time hardening check, against guest file trees built by the test."""

from __future__ import annotations

from pathlib import Path

from appliance import hardening
from xwvm.protocol import hardening as privilege


def guest(tmp: Path, *, root_pw: str = "!", sudo: bool = False, sshd: dict | None = None,
          sudoers: bool = False) -> Path:
    (tmp / "etc/ssh/sshd_config.d").mkdir(parents=True)
    (tmp / "etc/shadow").write_text(f"root:{root_pw}:19000:0:99999:7:::\n"
                                    "xwvm:!:19000:0:99999:7:::\n")
    (tmp / "usr/sbin").mkdir(parents=True)
    (tmp / "usr/bin").mkdir(parents=True)
    (tmp / "usr/sbin/sshd").write_text("")
    if sudo:
        (tmp / "usr/bin/sudo").write_text("")
    if sudoers:
        (tmp / "etc/sudoers.d").mkdir()
        (tmp / "etc/sudoers.d/xwvm").write_text("xwvm ALL=(ALL) NOPASSWD:ALL\n")
    settings = sshd if sshd is not None else {"PasswordAuthentication": "no",
                                              "PermitRootLogin": "no",
                                              "KbdInteractiveAuthentication": "no"}
    (tmp / "etc/ssh/sshd_config.d/10-xwvm.conf").write_text(
        "".join(f"{k} {v}\n" for k, v in settings.items()))
    (tmp / "etc/ssh/sshd_config").write_text("PasswordAuthentication yes\nPermitRootLogin yes\n")
    return tmp


def test_hardened_guest_passes(tmp_path: Path) -> None:
    assert hardening.problems(guest(tmp_path)) == []


def test_each_violation_is_named(tmp_path: Path) -> None:
    root = guest(tmp_path, root_pw="$6$salt$hash", sudo=True, sudoers=True,
                 sshd={"PasswordAuthentication": "yes"})
    found = hardening.problems(root)
    assert "root has a usable password" in found
    assert "/usr/bin/sudo exists" in found
    assert "/etc/sudoers.d is not empty" in found
    assert "sshd allows password authentication" in found
    assert "sshd allows root login" in found  # falls through to sshd_config: yes


def test_empty_root_password_is_not_locked(tmp_path: Path) -> None:
    assert "root has a usable password" in hardening.problems(guest(tmp_path, root_pw=""))


def test_first_sshd_value_wins(tmp_path: Path) -> None:
    # The main file says yes, the drop-in read first says no: sshd keeps the first value.
    assert hardening.problems(guest(tmp_path)) == []


def test_every_privilege_program_is_named_wherever_it_lies(tmp_path: Path) -> None:
    root = guest(tmp_path)
    for prog in ("usr/sbin/doas", "usr/local/bin/pkexec", "bin/sudo"):
        (root / prog).parent.mkdir(parents=True, exist_ok=True)
        (root / prog).write_text("")
    assert {"/usr/sbin/doas exists", "/usr/local/bin/pkexec exists",
            "/bin/sudo exists"} <= set(hardening.problems(root))


def test_packages_and_programs_come_from_one_table() -> None:
    for tool, (packages, programs) in privilege.PRIVILEGE_TOOLS.items():
        assert tool in packages and set(packages) <= set(privilege.FORBIDDEN_PACKAGES)
        assert all(f"usr/bin/{p}" in privilege.FORBIDDEN_PROGRAMS for p in programs)
