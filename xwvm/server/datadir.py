"""The server's files on disk are the server account's alone: its data directory 0700 and
every file in it 0600 (database and its -wal/-shm, server.yaml, keys, blobs, upload parts).

The database holds the token secret: whoever reads it can sign tokens for any user, so
another local account must not even list the directory."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("xwvm.server")

UMASK = 0o077  # new files 0600, new directories 0700, whatever creates them (SQLite too)
DIR_MODE = 0o700
FILE_MODE = 0o600


def restrict_process() -> None:
    """Every file this process creates from now on is private (inherited by gunicorn's
    workers, so blobs, upload parts and SQLite's -wal/-shm are covered as well)."""
    os.umask(UMASK)


def private_dir(path: Path) -> Path:
    """Make ``path`` (and missing parents) and leave it 0700."""
    path = Path(path)
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    path.chmod(DIR_MODE)
    return path


def _tighten_one(path: Path) -> bool:
    mode = path.lstat().st_mode
    if stat.S_ISLNK(mode) or not stat.S_IMODE(mode) & 0o077:
        return False  # a link's own mode means nothing; its target is checked where it is
    path.chmod(stat.S_IMODE(mode) & 0o700)
    return True


def tighten(data_dir: Path, extra: list[Path] | None = None) -> list[Path]:
    """Take group and other rights away from the data directory, everything under it and
    the ``extra`` files (a SQLite database kept elsewhere); the paths changed."""
    top = Path(data_dir)
    changed = [p for p in [top, *top.rglob("*"), *(extra or [])]
               if p.exists() and _tighten_one(p)]
    for path in changed:
        log.warning("%s was readable or writable by other accounts: now private", path)
    return changed


def sqlite_files(db_url: str) -> list[Path]:
    """A SQLite database file and its -wal/-shm/-journal companions (none for PostgreSQL)."""
    prefix = "sqlite:///"
    if not db_url.startswith(prefix) or db_url == prefix + ":memory:":
        return []
    db = Path(db_url[len(prefix):])
    return [db, *(db.with_name(db.name + s) for s in ("-wal", "-shm", "-journal"))]
