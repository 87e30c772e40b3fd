"""The platform vocabulary: how a host's architecture is named on the wire (``os/arch``
keys of app binaries, a host's facts), whatever the local tools call it."""

from __future__ import annotations

_ARCH = {"amd64": "x86_64", "x86-64": "x86_64", "arm64": "aarch64", "i686": "x86",
         "i386": "x86"}


def normalize_arch(machine: str) -> str:
    """``AMD64`` -> ``x86_64``, ``arm64`` -> ``aarch64``; other names lower-cased."""
    m = machine.lower()
    return _ARCH.get(m, m)
