"""The agent wrapper has one path: the context's agent command, and its shell copies."""

from __future__ import annotations

import re
from pathlib import Path

from contextualizer.model import DEFAULT_AGENT_COMMAND, GUEST_CONTEXT_PATH
from xwvm.client.imagebuild import hooks

ROOT = Path(__file__).resolve().parents[2]
INIT = ROOT / "appliance" / "init"
PROVISION = ROOT / "packer" / "scripts" / "provision.sh"
AGENT = DEFAULT_AGENT_COMMAND[0]


def test_the_mmdebstrap_hooks_write_the_agent_where_the_context_runs_it() -> None:
    assert hooks.AGENT == AGENT


def test_the_init_runs_the_agent_and_context_the_context_names() -> None:
    text = INIT.read_text()
    assert re.findall(r"^AGENT=(\S+)$", text, re.MULTILINE) == [AGENT]
    assert re.findall(r"^CONTEXT=(\S+)$", text, re.MULTILINE) == [GUEST_CONTEXT_PATH]
    assert DEFAULT_AGENT_COMMAND[1:] == ("--context", GUEST_CONTEXT_PATH)
    assert '"$AGENT" --context "$CONTEXT"' in text


def test_the_packer_provisioning_writes_the_agent_there() -> None:
    text = PROVISION.read_text()
    written = re.findall(r"^cat >(\S+) <<", text, re.MULTILINE)
    made_executable = re.findall(r"^chmod 0755 (\S*xwvm-agent)$", text, re.MULTILINE)
    assert written == [AGENT], written
    assert made_executable == [AGENT], made_executable
