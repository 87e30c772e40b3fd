"""No function over 50 lines outside database migrations, in the tests too: long functions
hide steps that deserve a name (and a test)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("xwvm", "appliance", "contextualizer", "bench", "scripts", "tests")
MAX_LINES = 50


def long_functions(path: Path, root: Path = ROOT) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    return [f"{path.relative_to(root)}:{n.lineno} {n.name} ({n.end_lineno - n.lineno + 1} lines)"
            for n in ast.walk(tree)
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
            and n.end_lineno is not None and n.end_lineno - n.lineno + 1 > MAX_LINES]


def test_no_function_over_50_lines() -> None:
    found = [f for source in SOURCES for path in sorted((ROOT / source).rglob("*.py"))
             if "migrations" not in path.parts for f in long_functions(path)]
    assert not found, "functions over 50 lines:\n" + "\n".join(found)


def test_the_check_sees_a_long_function(tmp_path: Path) -> None:
    src = tmp_path / "long.py"
    src.write_text("def f():\n" + "    x = 1\n" * MAX_LINES)
    assert long_functions(src, tmp_path) == [f"long.py:1 f ({MAX_LINES + 1} lines)"]
    src.write_text("def f():\n" + "    x = 1\n" * (MAX_LINES - 1))
    assert long_functions(src, tmp_path) == []
