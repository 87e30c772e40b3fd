"""The layers' import rules (docs/architecture.md, "Layers"), checked on the source.

Every import counts, including ones inside functions and under ``TYPE_CHECKING``: a lazy
import of a forbidden layer is still a dependency on it.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STDLIB = frozenset(sys.stdlib_module_names) | {"__future__"}
GUEST_READER = ("contextualizer.model", "contextualizer.errors")
#: What the worker may use of the client: the SDK and the helpers every role's CLI shares.
WORKER_USES_OF_CLIENT = ("xwvm.client.sdk", "xwvm.client.cli_common", "xwvm.client.session",
                         "xwvm.client.signer")


def modules(package: str) -> Iterator[tuple[str, Path]]:
    base = ROOT / package.replace(".", "/")
    files = [base.with_suffix(".py")] if base.with_suffix(".py").is_file() \
        else sorted(base.rglob("*.py"))
    for path in files:
        rel = path.relative_to(ROOT).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        yield ".".join(parts), path


def imports(name: str, path: Path) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            yield node.lineno, module
            for alias in node.names:  # `from pkg import submodule`
                sub = ROOT / module.replace(".", "/") / alias.name
                if sub.with_suffix(".py").is_file() or sub.is_dir():
                    yield node.lineno, f"{module}.{alias.name}"


def under(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def is_ours(module: str) -> bool:
    return under(module, "xwvm", "appliance", "contextualizer", "tests")


def is_stdlib(module: str) -> bool:
    return module.split(".")[0] in STDLIB


def only_stdlib_and(*allowed: str):
    def rule(module: str) -> bool:
        return is_stdlib(module) or under(module, *allowed)
    return rule


def never(*forbidden: str):
    def rule(module: str) -> bool:
        return not under(module, *forbidden)
    return rule


# (layer, the rule every import in it keeps, why)
RULES = [
    ("xwvm.protocol", only_stdlib_and("xwvm.protocol"),
     "the protocol goes into VM images: standard library only"),
    ("contextualizer.model", only_stdlib_and("xwvm.protocol", *GUEST_READER),
     "the context reader runs in the guest"),
    ("contextualizer.errors", only_stdlib_and("xwvm.protocol", *GUEST_READER),
     "the context reader runs in the guest"),
    ("appliance", only_stdlib_and("appliance", "xwvm.protocol", *GUEST_READER),
     "the guest imports the standard library, the protocol and the context reader only"),
    ("contextualizer", never("xwvm.server", "xwvm.worker", "xwvm.client", "appliance"),
     "the contextualizer is used by server, worker and guest alike"),
    ("xwvm.server", never("xwvm.worker", "xwvm.client", "appliance", "xwvm.cli"),
     "the server never depends on a worker, a client or the guest"),
    ("xwvm.client", never("xwvm.server", "xwvm.worker", "xwvm.cli"),
     "the user's client imports neither the server nor the worker"),
    ("xwvm.worker", never("xwvm.server", "xwvm.cli"),
     "the worker talks to the server over HTTPS only"),
    ("xwvm.worker", lambda m: not under(m, "xwvm.client") or under(m, *WORKER_USES_OF_CLIENT),
     "the worker uses the client's SDK and CLI helpers, never the user's commands"),
    ("xwvm.errors", never("xwvm.server", "xwvm.worker", "xwvm.client", "appliance"),
     "shared modules sit below every role"),
    ("xwvm.ids", never("xwvm.server", "xwvm.worker", "xwvm.client", "appliance"),
     "shared modules sit below every role"),
    ("xwvm.signing", never("xwvm.server", "xwvm.worker", "xwvm.client", "appliance"),
     "shared modules sit below every role"),
]


@pytest.mark.parametrize("layer,rule,why", RULES, ids=[r[0] for r in RULES])
def test_layer_imports(layer: str, rule, why: str) -> None:
    broken = [f"{path.relative_to(ROOT)}:{line} imports {module}"
              for name, path in modules(layer)
              for line, module in imports(name, path)
              if (is_ours(module) or layer in ("xwvm.protocol", "appliance",
                                               *GUEST_READER)) and not rule(module)]
    assert not broken, f"{why}:\n" + "\n".join(broken)


def test_every_module_is_in_a_layer() -> None:
    """A new top-level module under xwvm/ must be placed in a layer (and this table)."""
    covered = {r[0] for r in RULES} | {"xwvm", "xwvm.cli"}
    top = {f"xwvm.{p.stem}" if p.is_file() else f"xwvm.{p.name}"
           for p in (ROOT / "xwvm").iterdir()
           if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}
    assert top <= covered, f"not in any layer: {sorted(top - covered)}"


def test_the_rules_catch_a_forbidden_import(tmp_path: Path) -> None:
    """The checker itself: a lazy import inside a function is found."""
    src = tmp_path / "mod.py"
    src.write_text("def f():\n    from xwvm.server import wsgi\n    import flask\n")
    found = [m for _, m in imports("appliance.mod", src)]
    assert "xwvm.server.wsgi" in found and "flask" in found
    guest = dict((r[0], r[1]) for r in RULES)["appliance"]
    assert not guest("flask") and not guest("xwvm.server.app") and guest("json")
