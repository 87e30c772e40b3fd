"""The platform vocabulary: how a host's architecture is named on the wire (``os/arch``
keys of app binaries, a host's facts), whatever the local tools call it."""

from __future__ import annotations

_ARCH = {"amd64": "x86_64", "x86-64": "x86_64", "arm64": "aarch64", "i686": "x86",
         "i386": "x86"}


def normalize_arch(machine: str) -> str:
    """``AMD64`` -> ``x86_64``, ``arm64`` -> ``aarch64``; other names lower-cased."""
    m = machine.lower()
    return _ARCH.get(m, m)


# What workers report (platform.system().lower(), and normalize_arch): a binary for any
# other os/arch would never meet a host, so its platform is refused (server and client).
KNOWN_OS = ("darwin", "freebsd", "linux", "netbsd", "openbsd", "windows")
KNOWN_ARCH = ("aarch64", "armv7l", "ppc64le", "riscv64", "s390x", "x86", "x86_64")
_OS_ALIASES = {"macos": "darwin", "macosx": "darwin", "mac": "darwin"}


class UnknownPlatform(ValueError):
    """An ``os/arch`` no worker reports; the message names the accepted values."""


def normalize_os(name: str) -> str:
    """``macOS`` -> ``darwin``; other names lower-cased."""
    n = name.lower()
    return _OS_ALIASES.get(n, n)


def check_platform(platform: str) -> tuple[str, str]:
    """(os, arch) of ``os/arch``, spelled as workers report them (``macos`` is ``darwin``,
    ``amd64`` is ``x86_64``); UnknownPlatform names the accepted values, and says when
    the two look swapped."""
    os_name, sep, arch = platform.lower().partition("/")
    os_name, arch = normalize_os(os_name), normalize_arch(arch)
    if sep and os_name in KNOWN_OS and arch in KNOWN_ARCH:
        return os_name, arch
    swapped = normalize_arch(os_name) in KNOWN_ARCH and normalize_os(arch) in KNOWN_OS
    hint = " (OS and arch swapped?)" if swapped else ""
    raise UnknownPlatform(f"unknown platform {platform!r}{hint}: a platform is OS/ARCH, e.g. "
                          f"linux/x86_64, with OS one of {', '.join(KNOWN_OS)}; arch one of "
                          f"{', '.join(KNOWN_ARCH)}")
