"""docs/admin-guide.md's configuration table names every server setting, once, with the
default the server really has, so the guide stays complete as settings are added."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from xwvm.server.config import ServerConfig

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "admin-guide.md"
COMPUTED = {"db_url", "public_name"}  # defaults made at run time (the data dir, host name)


def guide_rows() -> dict[str, tuple[str, str]]:
    """setting -> (default, meaning), from the table under '## Configuration'."""
    text = GUIDE.read_text()
    section = text[text.index("## Configuration\n"):]
    section = section[:section.index("\n## ", 1)]
    rows: dict[str, tuple[str, str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            name = cells[0].strip("`")
            assert name not in rows, f"{name} is in the table twice"
            rows[name] = (cells[1], cells[2])
    return rows


def settings() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(ServerConfig) if f.name != "data_dir"}


def test_the_table_names_every_setting_and_no_other() -> None:
    rows = guide_rows()
    assert sorted(set(settings()) - set(rows)) == [], "settings missing from the guide"
    assert sorted(set(rows) - set(settings())) == [], "the guide names unknown settings"
    assert all(meaning for _, meaning in rows.values())


def test_the_table_gives_each_settings_real_default() -> None:
    rows = guide_rows()
    for name, f in settings().items():
        shown = rows[name][0].strip("`")
        if name in COMPUTED:
            assert shown, name
        elif f.default == "":
            assert shown == "(none)", f"{name}: {shown!r}"
        else:
            assert shown == str(f.default), f"{name}: the guide says {shown!r}, not {f.default!r}"
