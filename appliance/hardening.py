"""Guest hardening checks, run by the agent at boot before any payload runs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from xwvm.protocol.hardening import FORBIDDEN_PROGRAMS

SSHD_DIR = Path("/etc/ssh")


def _shadow_locked(shadow: Path, account: str) -> bool:
    for line in shadow.read_text().splitlines():
        fields = line.split(":")
        if fields[0] == account:
            return len(fields) > 1 and fields[1].startswith(("!", "*"))  # "" = no password
    return True  # no such account: nothing to log in to


def _sshd_settings(root: Path) -> dict[str, str]:
    """The effective sshd settings: `sshd -T` when it can run, else the files (sshd keeps
    the first value it reads for each keyword; drop-ins are included first)."""
    if root == Path("/") and shutil.which("sshd"):
        proc = subprocess.run(["sshd", "-T"], capture_output=True, text=True)
        if proc.returncode == 0:
            return dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)
    settings: dict[str, str] = {}
    ssh = root / SSHD_DIR.relative_to("/")
    files = sorted((ssh / "sshd_config.d").glob("*.conf")) + [ssh / "sshd_config"]
    for f in files:
        if not f.is_file():
            continue
        for line in f.read_text().splitlines():
            parts = line.strip().split(None, 1)
            if len(parts) == 2 and not parts[0].startswith("#"):
                settings.setdefault(parts[0].lower(), parts[1].strip().lower())
    return settings


def problems(root: Path = Path("/")) -> list[str]:
    """Every way this system breaks the hardening policy (empty when it holds)."""
    found = []
    shadow = root / "etc/shadow"
    if shadow.is_file() and not _shadow_locked(shadow, "root"):
        found.append("root has a usable password")
    found.extend(f"/{prog} exists" for prog in FORBIDDEN_PROGRAMS if (root / prog).exists())
    sudoers = root / "etc/sudoers.d"
    if sudoers.is_dir() and any(p.name != "README" for p in sudoers.iterdir()):
        found.append("/etc/sudoers.d is not empty")
    if (root / "usr/sbin/sshd").exists():
        cfg = _sshd_settings(root)
        if cfg.get("passwordauthentication", "yes") != "no":
            found.append("sshd allows password authentication")
        if cfg.get("permitrootlogin", "prohibit-password") != "no":
            found.append("sshd allows root login")
        if cfg.get("kbdinteractiveauthentication", "yes") != "no":
            found.append("sshd allows keyboard-interactive authentication")
    return found
