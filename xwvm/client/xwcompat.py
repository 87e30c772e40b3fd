"""XtremWeb-HEP command aliases (xwsubmit, xwworks, ...) with their --xw* options."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from xwvm.client import cli
from xwvm.client.cli_common import fail, refs, resolve, uri_uid
from xwvm.client.formats import FORMATS
from xwvm.protocol.platforms import KNOWN_ARCH, KNOWN_OS, normalize_arch, normalize_os

FORMAT_CHOICE = click.Choice(FORMATS)
RM_COLUMNS = cli.RM_COLUMNS


def xw_options(fn: Any) -> Any:
    fn = click.option("--xwformat", "fmt", type=FORMAT_CHOICE, default="table",
                      help="output format (XWHEP: xml or csv)")(fn)
    return fn


@click.command(help="xwsendapp NAME [CPU OS] FILE: register a native app (XWHEP alias); "
                    "workers run it once signed (--sign-key, or 'xwvm app sign').")
@click.argument("name")
@click.argument("rest", nargs=-1, required=True)
@click.option("--sign-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="sign it at once with this Ed25519 private key")
@xw_options
@cli.handle_errors
def xwsendapp(name: str, rest: tuple[str, ...], sign_key: Path | None, fmt: str) -> None:
    if len(rest) == 3:
        cpu, os_name, path = rest
        if normalize_os(cpu) in KNOWN_OS and normalize_arch(os_name) in KNOWN_ARCH:
            cpu, os_name = os_name, cpu  # XWHEP users often give them the other way round
            click.echo(f"read as CPU {cpu}, OS {os_name}", err=True)
        platforms: tuple[str, ...] = (f"{os_name.lower()}/{cpu.lower()}",)
    elif len(rest) == 1:
        path, platforms = rest[0], ()
    else:
        raise click.UsageError("use: xwsendapp NAME [CPU OS] FILE")
    if not Path(path).is_file():
        raise click.UsageError(f"{path} is not a file")
    cli.send_app(name, (path,), platforms, False, "755", fmt, sign_key)


@click.command(help="List apps (XWHEP alias).")
@xw_options
@cli.handle_errors
def xwapps(fmt: str) -> None:
    c = cli.client()
    cli.output(c.list_apps(), cli.APP_COLUMNS, fmt, "app", c)


@click.command(help="xwsubmit APP [ARGS...]: submit a job (XWHEP alias).",
               context_settings={"ignore_unknown_options": True})
@click.argument("app_name")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("--xwenv", "inputs", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="environment/input file placed in the job's directory")
@click.option("--xwlistenport", type=int, help="port the job listens on (stored for later)")
@click.option("--xwwait", is_flag=True, help="wait for the job to end")
@xw_options
@cli.handle_errors
def xwsubmit(app_name: str, args: tuple[str, ...], inputs: tuple[str, ...],
             xwlistenport: int | None, xwwait: bool, fmt: str) -> None:
    cli.submit_jobs(app_name, args, inputs, (), None, (), 1, xwwait, None, fmt,
                    {"listen_port": xwlistenport})


@click.command(help="List jobs (XWHEP alias); accepts xw:// URIs.")
@click.argument("uids", nargs=-1, metavar="[JOB]...", callback=refs("job"))
@xw_options
@cli.handle_errors
def xwworks(uids: tuple[str, ...], fmt: str) -> None:
    c = cli.client()
    rows = c.list_works(list(uids) or None)
    if rows or not uids:
        cli.output(rows, cli.WORK_COLUMNS, fmt, "work", c)
    missing = [u for u in dict.fromkeys(uids) if u not in {r["uid"] for r in rows}]
    if missing:
        fail("no such job (or not readable): " + ", ".join(missing))


@click.command(help="Download jobs' results into DIR/UID (XWHEP alias).")
@click.argument("uids", nargs=-1, required=True, metavar="JOB...", callback=refs("job"))
@click.option("--xwoutput", "-o", "dest", type=click.Path(path_type=Path), default=Path("."))
@xw_options
@cli.handle_errors
def xwresults(uids: tuple[str, ...], dest: Path, fmt: str) -> None:
    rows = []
    for uid in uids:
        names = cli.fetch_results(uid, dest / uid, quiet=True)
        rows.append({"uid": uid, "path": str(dest / uid), "files": len(names)})
    cli.output(rows, ("uid", "path", "files"), fmt, "result")


@click.command(help="Upload data files (XWHEP alias).")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@xw_options
@cli.handle_errors
def xwsenddata(files: tuple[str, ...], fmt: str) -> None:
    c = cli.client()
    cli.output([cli.upload(c, Path(f)) for f in files], cli.DATA_COLUMNS, fmt, "data", c)


@click.command(help="List data (XWHEP alias).")
@xw_options
@cli.handle_errors
def xwdatas(fmt: str) -> None:
    c = cli.client()
    cli.output(c.list_data(), cli.DATA_COLUMNS, fmt, "data", c)


@click.command(help="List workers (XWHEP alias).")
@xw_options
@cli.handle_errors
def xwworkers(fmt: str) -> None:
    c = cli.client()
    cli.output(c.list_hosts(), cli.HOST_COLUMNS, fmt, "host", c)


@click.command(help="Remove jobs, data or apps by id or xw:// URI (XWHEP alias).")
@click.argument("uris", nargs=-1, required=True, metavar="REF...")
@xw_options
@cli.handle_errors
def xwrm(uris: tuple[str, ...], fmt: str) -> None:
    from xwvm.client.sdk import ApiError
    c = cli.client()
    found = {ref: uri_uid(c, ref, "object") for ref in uris}
    bad = [ref for ref, uid in found.items() if uid is None]
    if bad:
        fail(f"not an id (a UUID, or xw://SERVER/UUID): {', '.join(bad)}")
    rows = []
    for uid in filter(None, found.values()):
        for kind, remove in (("work", c.delete_work), ("data", c.delete_data),
                             ("app", c.delete_app)):
            try:
                remove(uid)
                rows.append({"uid": uid, "kind": kind, "removed": True})
                break
            except ApiError as e:
                if e.status != 404:
                    raise
        else:
            if rows:  # what was removed before the one that is not there
                cli.output(rows, RM_COLUMNS, fmt, "removed")
            raise click.ClickException(f"no job, data or app with id {uid}")
    cli.output(rows, RM_COLUMNS, fmt, "removed")


@click.command(help="xwchmod MODE REF...: change access rights (XWHEP alias).")
@click.argument("mode")
@click.argument("names", nargs=-1, required=True, metavar="REF...")
@xw_options
@cli.handle_errors
def xwchmod(mode: str, names: tuple[str, ...], fmt: str) -> None:
    c = cli.client()
    rows = [c.chmod(uid, mode) for uid in [resolve(c, ref, "object") for ref in names]]
    cli.output(rows, ("uid", "kind", "access_rights"), fmt, "object")
