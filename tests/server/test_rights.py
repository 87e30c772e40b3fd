"""Access-rights values and chmod parsing."""

import pytest

from xwvm.errors import BadRequest
from xwvm.server.rights import Level, format_mode, parse_mode


@pytest.mark.parametrize("spec,current,expected", [
    ("700", 0o755, 0o700), ("0750", 0o700, 0o750), ("1755", 0, 0o1755),
    ("g+rx", 0o700, 0o750), ("o-rwx", 0o755, 0o750), ("go=", 0o755, 0o700),
    ("a+r", 0o700, 0o744), ("+t", 0o755, 0o1755), ("u=rwx,g=rx,o=", 0o777, 0o750),
    ("-t", 0o1755, 0o755), ("o=r", 0o755, 0o754),
])
def test_parse_mode(spec: str, current: int, expected: int) -> None:
    assert parse_mode(spec, current) == expected


@pytest.mark.parametrize("bad", ["999", "g+q", "x+r", "rwx", "", "7777777"])
def test_parse_mode_rejects(bad: str) -> None:
    with pytest.raises(BadRequest) as e:
        parse_mode(bad, 0o755)
    assert "access rights" in e.value.message


def test_levels_are_ordered_as_in_xtremweb() -> None:
    assert Level.STANDARD < Level.WORKER < Level.VWORKER < Level.GROUP_ADMIN < Level.SUPER
    assert Level.parse("group-admin") is Level.GROUP_ADMIN
    for ambiguous in ("emperor", "admin", "user", "advanced", "superuser"):
        with pytest.raises(BadRequest, match="use one of standard"):
            Level.parse(ambiguous)


def test_format_mode() -> None:
    assert format_mode(0o755) == "755"
    assert format_mode(0o1750) == "1750"
