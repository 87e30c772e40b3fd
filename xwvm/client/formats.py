"""Output formats of the CLI: table, json, xml and csv (XtremWeb-HEP's --xwformat)."""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import Any

FORMATS = ("table", "json", "xml", "csv")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


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
                ET.SubElement(el, key).text = _cell(r[key])
        ET.indent(root)
        return ET.tostring(root, encoding="unicode")
    table = [list(columns)] + [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
    return "\n".join("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
                     for row in table)
