"""`xwvm admin --help` says which tools need a server, and it is true: `keygen` works with
no server at all, every other admin command asks one (and says so when there is none)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.processes import run_cli


def _help(home: Path) -> tuple[str, list[str]]:
    """The group's description and its commands' names, from `xwvm admin --help`."""
    text = run_cli(["admin", "--help"], home).stdout
    description = text.split("Options:")[0].split("\n", 1)[1]
    commands = re.findall(r"^  (\S+)  ", text.split("Commands:")[1], re.M)
    return " ".join(description.split()), commands


def test_the_help_says_which_commands_need_a_server(tmp_path: Path) -> None:
    description, commands = _help(tmp_path / "cfg")
    assert "need no server" not in description.replace("needs no server", "")
    assert "'keygen' works here and needs no server" in description
    assert "keygen" in commands and len(commands) > 1
    online = description.split("needs no server", 1)[1]
    assert "ask the server" in online
    for name in commands:
        if name != "keygen":
            assert f"'{name}'" in online, f"admin --help does not say that {name} needs a server"


def test_keygen_needs_no_server_and_the_others_do(tmp_path: Path) -> None:
    home = tmp_path / "cfg"  # never logged in: no server is known
    out = run_cli(["admin", "keygen", "-o", str(tmp_path / "keys")], home)
    assert re.fullmatch(r"[0-9a-f]{16}\n", out.stdout)
    assert (tmp_path / "keys" / "template-signing-key.pem").exists()
    _, commands = _help(home)
    args = {"certs": [], "revoke-cert": ["1"], "issue-cert": ["bob", "-o", str(tmp_path / "c")]}
    for name in commands:
        if name == "keygen":
            continue
        proc = run_cli(["admin", name, *args.get(name, [])], home, check=False)
        assert proc.returncode != 0 and "not logged in" in proc.stderr, (name, proc.stderr)
        assert "Traceback" not in proc.stderr
