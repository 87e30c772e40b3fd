"""The one list of the privilege tools a guest must not have.

Data only (standard library, nothing of ours): the image build refuses the packages and
checks that no program is left in the image (``xwvm/client/imagebuild``), the guest's agent
checks the programs again at every boot (``appliance/hardening.py``), and a stock cloud
image's cloud-init purges the packages and strips the setuid bit of every program
(``contextualizer/seed.py``).
"""

from __future__ import annotations

#: tool: (its Debian packages, the programs they install)
PRIVILEGE_TOOLS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "sudo": (("sudo", "sudo-ldap"), ("sudo",)),
    "doas": (("doas", "opendoas"), ("doas",)),
    "pkexec": (("pkexec", "policykit-1"), ("pkexec",)),
}
#: Privilege programs of essential packages, which cannot be purged: a guest keeps them
#: without their setuid bit (an appliance spec may keep su's, ``hardening.su``).
SETUID_ONLY_PROGRAMS = ("su",)
#: Where a program may lie, relative to the guest's root.
PROGRAM_DIRS = ("usr/bin", "bin", "usr/sbin", "sbin", "usr/local/bin")

FORBIDDEN_PACKAGES = tuple(pkg for pkgs, _ in PRIVILEGE_TOOLS.values() for pkg in pkgs)
#: Paths relative to the guest's root.
FORBIDDEN_PROGRAMS = tuple(f"{d}/{prog}" for d in PROGRAM_DIRS
                           for _, progs in PRIVILEGE_TOOLS.values() for prog in progs)
#: Every privilege program's possible paths (forbidden ones and setuid-only ones).
SETUID_STRIPPED = FORBIDDEN_PROGRAMS + tuple(f"{d}/{prog}" for d in PROGRAM_DIRS
                                             for prog in SETUID_ONLY_PROGRAMS)
