"""The probe guest every backend boots to self-test its hypervisor: one boot sector."""

from __future__ import annotations

PROBE_MARKER = "XWVM-PROBE-OK"
# A boot sector that writes PROBE_MARKER to COM1 (port 0x3f8), then halts.
#   xor ax,ax; mov ds,ax; mov si,msg; mov dx,0x3f8
#   l: lodsb; test al,al; jz d; out dx,al; jmp l
#   d: cli; hlt; jmp d
#   msg: db "XWVM-PROBE-OK", 13, 10, 0
_BOOT_CODE = bytes.fromhex("31c08ed8be167cbaf803ac84c07403eeebf8faf4ebfc")
PROBE_SECTOR = (_BOOT_CODE + PROBE_MARKER.encode() + b"\r\n\0").ljust(510, b"\0") + b"\x55\xaa"
