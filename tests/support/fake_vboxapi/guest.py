"""What the FAKE VirtualBox's guest does: read from its boot disk's first sector.

- ``XWVM-FAKE-GUEST\\n`` followed by a script: a few shell-like lines, run like the real
  test guest's /init (tests/support/guest.py): ``echo TEXT`` prints to the serial port,
  ``sleep N`` waits, ``acpi`` makes the guest obey the ACPI power button; at the end the
  guest prints ``XWVM-GUEST: done rc=0`` and powers off.
- The driver's probe boot sector (x86 code that writes a string to COM1 and halts): the
  fake prints that string and keeps running, halted, as a real CPU would.
- Anything else: no bootable medium; the VM runs on, printing nothing, and ignores ACPI.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

FAKE_GUEST_MAGIC = b"XWVM-FAKE-GUEST\n"
# mov dx,0x3f8 / lodsb / test al,al / jz +3 / out dx,al: the serial print loop of a boot sector
_SERIAL_LOOP = bytes.fromhex("baf803ac84c07403ee")


@dataclass
class Program:
    events: list[tuple[float, str]] = field(default_factory=list)  # (seconds, text | "")
    poweroff_at: float | None = None  # seconds after boot; None: runs until stopped
    obeys_acpi: bool = False


def fake_guest_sector(script: str) -> bytes:
    """The first sector of a fake guest's disk that runs ``script``."""
    data = FAKE_GUEST_MAGIC + script.encode()
    if len(data) > 510:
        raise ValueError("a fake guest script must fit in one sector")
    return data.ljust(510, b"\0") + b"\x55\xaa"


def program_for(sector0: bytes | None) -> Program:
    if sector0 is None:
        return Program()
    if sector0.startswith(FAKE_GUEST_MAGIC):
        return _script(sector0[len(FAKE_GUEST_MAGIC):510].rstrip(b"\0").decode())
    at = sector0.find(_SERIAL_LOOP)
    if sector0[510:512] == b"\x55\xaa" and at > 0 and sector0[at - 3] == 0xBE:
        (si,) = struct.unpack_from("<H", sector0, at - 2)  # mov si, imm16 (org 0x7c00)
        text = sector0[si - 0x7C00:].split(b"\0", 1)[0].decode(errors="replace")
        return Program(events=[(0.05, text)])
    return Program()


def _script(script: str) -> Program:
    prog = Program(events=[(0.05, "XWVM-GUEST: up 0.05\n")])
    t = 0.05
    for line in script.splitlines():
        word, _, rest = line.strip().partition(" ")
        if word == "echo":
            prog.events.append((t, rest + "\n"))
        elif word == "sleep":
            t += float(rest)
        elif word == "acpi":
            prog.obeys_acpi = True
    prog.events.append((t, "XWVM-GUEST: done rc=0\n"))
    prog.poweroff_at = t + 0.05
    return prog
