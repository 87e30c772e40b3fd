"""Owns what an id or a name must look like before it becomes part of a path or a URL.

Shared by the server (which issues the ids) and the worker (which must not trust them: a
hostile server could send ``../../victim`` as a job uid or an input name). The server
normalizes what a client sends; the worker accepts only the canonical form it issues.
"""

from __future__ import annotations

import re
import uuid

from xwvm.errors import BadRequest

# The only uid form the server issues: str(uuid.uuid4()), lower-case hex with dashes.
UID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
SHA256_RE = re.compile(r"[0-9a-f]{64}\Z")
MAX_NAME = 255  # one path component on every file system we run on
MAX_PATH = 1024


class BadId(BadRequest):
    """A server-chosen id or name that cannot safely become a path; the worker refuses it
    (the message names what it was, never the value: it may be a crafted path)."""

    code = "bad_id"


def canonical_uid(value: object) -> str | None:
    """The canonical form of a uid a client sent (any form :class:`uuid.UUID` reads)."""
    try:
        return str(uuid.UUID(str(value))) if isinstance(value, str) else None
    except ValueError:
        return None


def check_uid(value: object, what: str) -> str:
    """``value`` if it is a canonical uid, else :class:`BadId`."""
    if isinstance(value, str) and UID_RE.match(value):
        return value
    raise BadId(f"the server sent a {what} id that is not a uid: refused")


def check_sha256(value: object, what: str) -> str:
    if isinstance(value, str) and SHA256_RE.match(value):
        return value
    raise BadId(f"the server sent a {what} sha256 that is not 64 hex digits: refused")


def check_file_name(value: object, what: str) -> str:
    """A plain file name: not empty, no ``/``, not ``.`` or ``..``, no NUL, bounded."""
    if (not isinstance(value, str) or not value or len(value) > MAX_NAME or "/" in value
            or "\0" in value or value in (".", "..")):
        raise BadId(f"the server sent a {what} name that is not a plain file name: refused")
    return value


def check_relative_name(value: object, what: str) -> str:
    """Plain file names joined by ``/`` (the server lets job inputs name subdirectories):
    relative, no ``.``/``..``/empty part, no NUL, bounded; it stays below its directory."""
    if not isinstance(value, str) or not value or len(value) > MAX_PATH:
        raise BadId(f"the server sent a {what} name that is not a relative path: refused")
    for part in value.split("/"):
        check_file_name(part, what)
    return value
