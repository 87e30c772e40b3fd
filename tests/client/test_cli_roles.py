"""One root command, a group per role: the user's client loads neither the server nor the
worker, and a host without the server's libraries still runs the rest."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# Run first in each child: any import of a blocked module fails as if it were not installed.
BLOCKER = textwrap.dedent("""
    import importlib.abc, sys
    BLOCKED = {blocked!r}

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None

    sys.meta_path.insert(0, Blocker())
""")


def child(blocked: tuple[str, ...], code: str, *args: str) -> subprocess.CompletedProcess[str]:
    source = BLOCKER.format(blocked=blocked) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", source, *args], capture_output=True,
                          text=True, timeout=120)


def test_the_client_imports_neither_server_nor_worker() -> None:
    proc = child(("xwvm.server", "xwvm.worker"), """
        import pkgutil, importlib, xwvm.client
        for m in pkgutil.walk_packages(xwvm.client.__path__, "xwvm.client."):
            importlib.import_module(m.name)
        from xwvm.cli import main
        main(["submit", "--help"], standalone_mode=False)
        loaded = [m for m in sys.modules if m.startswith(("xwvm.server", "xwvm.worker"))]
        assert not loaded, loaded
    """)
    assert proc.returncode == 0, proc.stderr
    assert "Submit COUNT jobs" in proc.stdout


def test_without_flask_the_server_group_says_it_is_unavailable() -> None:
    run_root = """
        from xwvm.cli import main
        main(sys.argv[1:])
    """
    listing = child(("flask",), run_root, "--help")
    assert listing.returncode == 0, listing.stderr
    assert "server    (unavailable" in listing.stdout
    assert "worker    Enroll and run workers." in listing.stdout
    refused = child(("flask",), run_root, "server", "init", "--data-dir", "/nonexistent")
    assert refused.returncode == 1
    assert "the server group is unavailable here: flask is not installed" in refused.stderr
    worker = child(("flask",), run_root, "worker", "enroll", "--help")
    assert worker.returncode == 0, worker.stderr
    assert "Write a worker credential file" in worker.stdout


def test_a_role_error_is_one_line(tmp_path) -> None:  # noqa: ANN001 - pytest fixture
    """Errors of the roles' commands end like the user's: a message, exit status 1."""
    empty = tmp_path / "password"
    empty.write_text("\n")
    proc = subprocess.run([sys.executable, "-m", "xwvm.cli", "server", "init", "--data-dir",
                           str(tmp_path / "d"), "--admin-password-file", str(empty)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"Error: {empty} is empty"
