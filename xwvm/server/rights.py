"""Rights levels of users and Unix-like access rights of objects: values and chmod parsing."""

from __future__ import annotations

import enum
import re

from xwvm.errors import BadRequest


class Level(enum.IntEnum):
    """User rights levels, ordered as in XtremWeb-HEP."""

    STANDARD = 10
    WORKER = 20
    VWORKER = 30
    GROUP_ADMIN = 40
    SUPER = 50

    @classmethod
    def parse(cls, text: str) -> Level:
        # One spelling each (a dash for the underscore, any case): "admin" or "user" could
        # mean two levels, and a wrong guess makes a group admin of a user (issue 23).
        levels = {"standard": cls.STANDARD, "worker": cls.WORKER, "vworker": cls.VWORKER,
                  "group_admin": cls.GROUP_ADMIN, "super": cls.SUPER}
        try:
            return levels[text.strip().lower().replace("-", "_")]
        except KeyError:
            raise BadRequest(
                "unknown rights level; use one of standard, worker, vworker, "
                "group_admin, super", code="bad_rights") from None

    @property
    def label(self) -> str:
        return self.name.lower()


PRIVATE = 0o700
GROUP = 0o750
PUBLIC = 0o755
STICKY = 0o1000
MODE_MASK = 0o1777

_SYMBOLIC = re.compile(r"^([ugoa]*)([+\-=])([rwxt]*)$")
_WHO = {"u": 0o700, "g": 0o070, "o": 0o007}
_PERM = {"r": 0o444, "w": 0o222, "x": 0o111}


def parse_mode(spec: str | int, current: int) -> int:
    """Apply a chmod spec (``750``, ``0755``, ``g+rx``, ``o-rwx,+t``) to ``current``."""
    if isinstance(spec, int):
        if not 0 <= spec <= MODE_MASK:
            raise BadRequest("access rights out of range 0..1777", code="bad_mode")
        return spec
    text = spec.strip()
    if re.fullmatch(r"[0-7]{3,4}", text):
        return parse_mode(int(text, 8), current)
    mode = current
    for clause in text.split(","):
        m = _SYMBOLIC.match(clause)
        if not m:
            raise BadRequest(
                "bad access rights: use octal (750) or symbolic (g+rx,o-rwx)",
                code="bad_mode")
        who, op, perms = m.groups()
        who_mask = 0
        for w in who or "a":
            who_mask |= 0o777 if w == "a" else _WHO[w]
        bits = 0
        for p in perms:
            bits |= STICKY if p == "t" else (_PERM[p] & who_mask)
        if op == "+":
            mode |= bits
        elif op == "-":
            mode &= ~bits
        else:
            keep = MODE_MASK & ~who_mask & ~(STICKY if "t" in perms else 0)
            mode = (mode & keep) | bits
    return mode & MODE_MASK


def format_mode(mode: int) -> str:
    return f"{mode:04o}" if mode & STICKY else f"{mode:03o}"
