"""The objects' lifecycle in the CLI: `host rm`, `user rm`, `group rm` and `app update`
(a native app's next version: binaries added, replaced or removed per platform).

:func:`register` adds them to the user's groups; what removal does to jobs and objects is
in docs/admin-guide.md ("Removing hosts, users, usergroups and apps")."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import click

from xwvm.client.cli_common import (
    client,
    fail,
    format_option,
    handle_errors,
    output,
    uri_uid,
)
from xwvm.client.sdk import Client
from xwvm.errors import XwvmError
from xwvm.protocol.platforms import normalize_arch

HOST_COLUMNS = ("uid", "name", "status", "os", "arch")
USER_COLUMNS = ("uid", "login", "rights", "enabled")
GROUP_COLUMNS = ("uid", "name")
APP_COLUMNS = ("uid", "name", "version", "binaries", "signed")
FORMAT = format_option()


def path_ref(c: Client, ref: str, kind: str) -> str:
    """The uid an id or an ``xw://SERVER/UID`` reference of this server names (another
    server's is refused: cli_common.uri_uid), else ``ref`` itself, a name the server
    resolves (a host's name or uid, a login, an app's name)."""
    return uri_uid(c, ref, kind) or ref


@click.group("host")
def host_group() -> None:
    """Worker hosts ('xwvm workers' lists them)."""


@host_group.command("rm")
@click.argument("refs", nargs=-1, required=True)
@FORMAT
@handle_errors
def host_rm(refs: tuple[str, ...], fmt: str) -> None:
    """Remove hosts (by id or name): the jobs they run go back to the queue (the retry
    counted), and a worker still running there is refused until it registers again.
    The host's owner, an admin of its group or a super user may."""
    c = client()
    output([c.delete_host(path_ref(c, r, "host")) for r in refs], HOST_COLUMNS, fmt, "host")


@click.command("rm")
@click.argument("refs", nargs=-1, required=True)
@FORMAT
@handle_errors
def user_rm(refs: tuple[str, ...], fmt: str) -> None:
    """Remove accounts (by login or id): refused while one owns unfinished jobs. Its
    sessions, certificates and worker accounts end; its objects and finished jobs stay."""
    c = client()
    output([c.delete_user(path_ref(c, r, "user")) for r in refs], USER_COLUMNS, fmt, "user")


@click.command("rm")
@click.argument("names", nargs=-1, required=True)
@FORMAT
@handle_errors
def group_rm(names: tuple[str, ...], fmt: str) -> None:
    """Remove usergroups (super users): refused while accounts belong to one."""
    c = client()
    output([c.delete_group(n) for n in names], GROUP_COLUMNS, fmt, "group")


@click.command("update")
@click.argument("ref")
@click.option("--file", "files", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="a binary to add, or to replace that platform's (repeatable, with "
                   "--platform)")
@click.option("--platform", "platforms", multiple=True,
              help="OS/ARCH of each --file, e.g. linux/x86_64 (default: this machine's)")
@click.option("--remove-platform", "removed", multiple=True, metavar="OS/ARCH",
              help="remove that platform's binary (repeatable)")
@click.option("--sign-key", "sign_key", type=click.Path(exists=True, dir_okay=False,
                                                        path_type=Path),
              help="sign the new version at once with this Ed25519 private key")
@FORMAT
@handle_errors
def app_update(ref: str, files: tuple[str, ...], platforms: tuple[str, ...],
               removed: tuple[str, ...], sign_key: Path | None, fmt: str) -> None:
    """A native app's next version: add or replace a binary per platform, or remove one.
    Jobs not yet on a worker run the new version; finished jobs keep the record of what
    they ran. The old signatures sign the old binaries: workers run the new version once
    it is signed anew (--sign-key, or 'xwvm app sign')."""
    from xwvm.client import cli as user_cli
    if not files and not removed:
        fail("give --file (with --platform) or --remove-platform")
    local = user_cli.local_binaries(files, platforms) if files else {}
    c = client()
    result = _update(c, path_ref(c, ref, "app"), local, list(removed))
    if sign_key is not None:
        _check_listed(result, local)
        result = user_cli.sign_app(c, result["uid"], sign_key)
    if not result.get("signed"):
        click.echo(f"app {result['name']} version {result['version']} is unsigned: workers "
                   "that trust keys run it once it is signed ('xwvm app sign')", err=True)
    output([result], APP_COLUMNS, fmt, "app")


def _update(c: Client, ref: str, local: dict[str, Path], removed: list[str]) -> dict[str, Any]:
    """Upload the binaries, then ask for the new version; if the server refuses it, the
    uploaded data objects are removed again (nothing half-written)."""
    from xwvm.client import cli as user_cli
    uploaded: dict[str, str] = {}
    try:
        for plat, path in local.items():
            uploaded[plat] = user_cli.upload(c, path)["uid"]
        return c.update_app_binaries(ref, uploaded, removed)
    except XwvmError:
        for uid in uploaded.values():
            with contextlib.suppress(XwvmError):
                c.delete_data(uid)
        raise


def _check_listed(app: dict[str, Any], local: dict[str, Path]) -> None:
    """Sign only when the server lists the local files' content for their platforms."""
    from xwvm.protocol.digest import sha256_file
    listed = {f"{b['os']}/{b['arch']}": (b["sha256"], b["size"])
              for b in app["signed_binaries"]}
    for plat, path in local.items():
        os_name, _, arch = plat.lower().partition("/")
        if listed.get(f"{os_name}/{normalize_arch(arch)}") != \
                (sha256_file(path), path.stat().st_size):
            fail(f"the server lists another {plat} binary than {path}: refusing to sign")


def register(main: click.Group) -> None:
    """Add the commands to the user's groups: `host rm` (a new group), `user rm`,
    `group rm`, `app update`."""
    main.add_command(host_group)
    groups = main.commands
    for group, command in (("user", user_rm), ("group", group_rm), ("app", app_update)):
        target = groups[group]
        assert isinstance(target, click.Group), group
        target.add_command(command)
