"""Output formats of the CLI: table, json, xml and csv (XtremWeb-HEP's --xwformat).

JSON keeps the server's values as they are; XML nests them as elements (a list's items as
``<item>``, a mapping's entries as ``<item key="K">``) with booleans written ``true`` and
``false``; table and csv cells are plain text (lists joined by commas, mappings as
``key=value``)."""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import Any

FORMATS = ("table", "json", "xml", "csv")


def _scalar(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _cell(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_cell(v)}" for k, v in sorted(value.items()))
    if isinstance(value, list | tuple):
        return ", ".join(_cell(v) for v in value)
    return _scalar(value)


def _xml(parent: ET.Element, tag: str, value: Any, key: str | None = None) -> None:
    el = ET.SubElement(parent, tag, {"key": key} if key is not None else {})
    if isinstance(value, dict):
        for k in sorted(value):
            _xml(el, "item", value[k], str(k))
    elif isinstance(value, list | tuple):
        for v in value:
            _xml(el, "item", v)
    else:
        el.text = _scalar(value)


def render(rows: Sequence[dict[str, Any]], columns: Sequence[str], fmt: str,
           kind: str = "item") -> str:
    if fmt == "json":
        return json.dumps(list(rows), indent=2, sort_keys=True)
    if fmt == "csv":
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(columns)
        for r in rows:
            w.writerow([_cell(r.get(c)) for c in columns])
        return out.getvalue().rstrip("\n")
    if fmt == "xml":
        root = ET.Element("xwvm")
        for r in rows:
            el = ET.SubElement(root, kind)
            for key in sorted(r):
                _xml(el, key, r[key])
        ET.indent(root)
        return ET.tostring(root, encoding="unicode")
    table = [list(columns)] + [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
    return "\n".join("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
                     for row in table)
