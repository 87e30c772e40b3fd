"""The one `xwvm` root command: the user's commands (:mod:`xwvm.client.cli`), plus the
server's group (:mod:`xwvm.server.cli`) and the worker's (:mod:`xwvm.worker.cli`).

A role's group is imported when it is first asked for, so the user's commands start
without loading the server or the worker. A role whose dependencies are missing (a
volunteer's install without Flask, say) does not break the others: its group is listed as
unavailable and says why when run.
"""

from __future__ import annotations

import os
from importlib import import_module
from typing import Any

import click

from xwvm.client import cli as client_cli
from xwvm.client.cli_common import error_text
from xwvm.errors import XwvmError

#: name -> (module, attribute) of each role's group.
ROLES = {
    "server": ("xwvm.server.cli", "server_group"),
    "worker": ("xwvm.worker.cli", "worker_group"),
}
OURS = ("xwvm", "appliance", "contextualizer")


def unavailable(name: str, missing: str) -> click.Command:
    """A stand-in for a role's group whose dependencies are not installed."""
    why = f"the {name} group is unavailable here: {missing} is not installed"

    def refuse(args: tuple[str, ...]) -> None:
        raise click.ClickException(why)

    return click.Command(name, callback=refuse, help=why, short_help=f"(unavailable: {why})",
                         params=[click.Argument(["args"], nargs=-1, type=click.UNPROCESSED)],
                         context_settings={"ignore_unknown_options": True,
                                           "help_option_names": []})


def role_group(name: str) -> click.Command:
    """The role's group; a stand-in if a library it needs is missing (an import error of
    our own code is a bug, and is raised as one)."""
    module, attribute = ROLES[name]
    try:
        return getattr(import_module(module), attribute)
    except ImportError as e:
        missing = e.name or str(e)
        if missing.split(".")[0] in OURS:
            raise
        return unavailable(name, missing)


class Root(click.Group):
    """The user's commands, the roles' groups on demand, and one way to print errors."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *ROLES})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in ROLES and cmd_name not in self.commands:
            self.add_command(role_group(cmd_name), cmd_name)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        """Project errors and OS errors from any group end in one line (exit status 1)."""
        try:
            return super().invoke(ctx)
        except XwvmError as e:
            raise click.ClickException(error_text(e)) from None
        except OSError as e:
            raise click.ClickException(str(e)) from None


@click.group(cls=Root, commands=dict(client_cli.main.commands))
@click.version_option(package_name="xwvm")
def main() -> None:
    """xwvm: a VM-centric desktop grid (XtremWeb-HEP rebuilt)."""


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
