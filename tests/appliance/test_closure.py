"""The guest's import closure: every module of appliance/, imported in a fresh, isolated
interpreter (``-I``: no site-packages, no environment) whose import system refuses any
module that is not the standard library, the appliance itself, the protocol or the
context reader. What the VM image carries is exactly that."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = r"""
import importlib, pkgutil, sys

ALLOWED = ("appliance", "xwvm.protocol", "contextualizer.model", "contextualizer.errors")
PACKAGES = ("xwvm", "contextualizer")  # their __init__ only (both import nothing eagerly)


class Refuse:
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in sys.stdlib_module_names or name in PACKAGES:
            return None
        if any(name == a or name.startswith(a + ".") for a in ALLOWED):
            return None
        raise ImportError(f"the guest imported {name}")


sys.meta_path.insert(0, Refuse())
sys.path.insert(0, sys.argv[1])
import appliance
names = [m.name for m in pkgutil.walk_packages(appliance.__path__, "appliance.")]
for name in names:
    importlib.import_module(name)
ours = sorted(m for m in sys.modules if m.split(".")[0] in ("appliance", "xwvm",
                                                             "contextualizer"))
print("\n".join(ours))
"""


def test_every_appliance_module_imports_only_stdlib_protocol_and_context_reader() -> None:
    out = subprocess.run([sys.executable, "-I", "-c", PROBE, str(ROOT)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    loaded = out.stdout.split()
    for module in ("appliance.agent", "appliance.nested", "appliance.http",
                   "appliance.runner", "appliance.isolation", "appliance.exchange",
                   "appliance.guest", "appliance.hardening", "xwvm.protocol.exchange"):
        assert module in loaded, loaded
    assert not [m for m in loaded if m.startswith(("xwvm.client", "xwvm.worker",
                                                   "xwvm.server", "xwvm.errors"))], loaded


def test_the_probe_refuses_what_the_guest_must_not_import() -> None:
    """The check itself: a module outside the closure is refused, not quietly loaded."""
    probe = PROBE.replace("import appliance\n", "import xwvm.errors\nimport appliance\n", 1)
    out = subprocess.run([sys.executable, "-I", "-c", probe, str(ROOT)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode != 0 and "the guest imported xwvm.errors" in out.stderr
