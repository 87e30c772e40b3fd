"""`xwvm why JOB`: why a pending job waits (HTCondor's ``condor_q -better-analyze``): the
hosts considered, how many fail each matching condition, and a one-line summary."""

from __future__ import annotations

import json
from typing import Any

import click

from xwvm.client import formats
from xwvm.client.cli_common import client, handle_errors, refs

COLUMNS = ("condition", "failing", "asks")


def render(answer: dict[str, Any]) -> str:
    """The analysis as people read it: the summary, the counts, one row per condition."""
    lines = [f"job {answer['uid']} ({answer['status']}): {answer['summary']}"]
    if answer["status"] == "PENDING":
        lines.append(f"{answer['hosts']} host(s) considered, {answer['matching']} can run "
                     "it now")
    rows = [{"condition": c["name"], "failing": c["failing"], "asks": c["asks"]}
            for c in answer.get("conditions") or ()]
    if rows:
        lines += ["", formats.render(rows, COLUMNS, "table")]
    return "\n".join(lines)


@click.command("why")
@click.argument("uid", metavar="JOB", callback=refs("job"))
@click.option("--format", "fmt", type=click.Choice(("table", "json")), default="table",
              show_default=True, help="output format")
@handle_errors
def why(uid: str, fmt: str) -> None:
    """Why job JOB waits: for a PENDING job, the hosts considered and how many of them fail
    each matching condition (rights, platform, signatures, hypervisor, network, sizes,
    alive, paused), with a one-line summary; for another state, what it waits for."""
    answer = client().why(uid)
    click.echo(json.dumps(answer, indent=2, sort_keys=True) if fmt == "json"
               else render(answer))


def register(main: click.Group) -> None:
    """Add `why` to the user's commands."""
    main.add_command(why)
