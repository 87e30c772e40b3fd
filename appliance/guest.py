"""What the context's ``guest`` section does to the appliance, without cloud-init.

Stock cloud images get the same from cloud-init's user-data (``users`` with the keys,
``write_files``); the appliance has no cloud-init in its boot path, so the agent (root)
applies it here before any payload runs: the submitter's SSH public keys become the
payload user's only way in (password logins are off, see hardening.py), and the
context's small files are written where the schema allows them.
"""

from __future__ import annotations

import os
import pwd
import re
from pathlib import Path

from contextualizer.model import GuestFile, JobContext

# The context schema's own rule (contextualizer/schema/context.schema.json), checked again
# here because this runs as root.
FILE_PATH_RE = re.compile(r"^/(home/xwvm|etc/xwvm)(/[A-Za-z0-9._-]+)+$")


class GuestSetupError(Exception):
    pass


def apply(ctx: JobContext, user: str, root: Path = Path("/")) -> None:
    """Install ``ctx``'s SSH keys for ``user`` and write its files (idempotent)."""
    account = pwd.getpwnam(user)
    if ctx.ssh_authorized_keys:
        install_keys(ctx.ssh_authorized_keys, account, root)
    for item in ctx.files:
        write_file(item, account, root)


def install_keys(keys: tuple[str, ...], account: pwd.struct_passwd, root: Path) -> Path:
    ssh_dir = root / account.pw_dir.lstrip("/") / ".ssh"
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = ssh_dir / "authorized_keys"
    _write_owned(target, "".join(f"{k.strip()}\n" for k in keys), 0o600, account)
    os.chown(ssh_dir, account.pw_uid, account.pw_gid)
    ssh_dir.chmod(0o700)
    return target


def write_file(item: GuestFile, account: pwd.struct_passwd, root: Path) -> Path:
    if not FILE_PATH_RE.match(item.path) or ".." in item.path.split("/"):
        raise GuestSetupError(f"context file {item.path!r} is outside /home/xwvm and "
                              "/etc/xwvm")
    mode = int(item.mode, 8)
    if mode & 0o7000:
        raise GuestSetupError(f"context file {item.path!r}: mode {item.mode} is not allowed")
    target = root / item.path.lstrip("/")
    home = item.path.startswith("/home/")
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.parent.is_symlink() or target.is_symlink():
        raise GuestSetupError(f"context file {item.path!r} goes through a symbolic link")
    _write_owned(target, item.content, mode, account if home else None)
    return target


def _write_owned(path: Path, text: str, mode: int, account: pwd.struct_passwd | None) -> None:
    """Write ``text`` atomically, owned by ``account`` (root when None), never following
    a link the payload user could have planted."""
    tmp = path.with_name(f".{path.name}.xwvm-tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.write(fd, text.encode())
        if account is not None:
            os.fchown(fd, account.pw_uid, account.pw_gid)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    os.replace(tmp, path)
