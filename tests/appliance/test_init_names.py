"""The guest's init (a shell script) names the server as the protocol does."""

from __future__ import annotations

import re
from pathlib import Path

from xwvm.protocol import GUEST_SERVER_NAME

INIT = Path(__file__).resolve().parents[2] / "appliance" / "init"


def test_the_hosts_file_names_the_server_as_the_certificate_does() -> None:
    text = INIT.read_text()
    names = re.findall(r"%s (\S+)\\n127\.0\.1\.1", text)
    assert names == [GUEST_SERVER_NAME], names
