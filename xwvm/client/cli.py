"""The user's `xwvm` commands: login, apps, data, jobs, results, users and groups (the
context, template and admin groups come from the other cli_* modules). The root command
(:mod:`xwvm.cli`) adds them next to the server's and the worker's groups."""

from __future__ import annotations

import contextlib
import platform
import shlex
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from xwvm.client import cli_auth
from xwvm.client import cli_template_store as template_store
from xwvm.client.cli_common import (
    WALL_CLOCK,
    client,
    fail,
    handle_errors,
    output,
    parse_env,
    path_refs,
    progress_bar,
    read_secret,
)
from xwvm.client.cli_common import format_option as format_option_factory
from xwvm.client.cli_context import context as context_group
from xwvm.client.cli_context import inline_context
from xwvm.client.cli_template import template_group
from xwvm.client.sdk import Client
from xwvm.client.session import Session
from xwvm.errors import XwvmError
from xwvm.protocol import DEFAULT_PILOT_IDLE_S, JobStatus, NetworkPolicy
from xwvm.protocol.platforms import normalize_arch

WORK_COLUMNS = ("uid", "status", "app", "label", "exit_code", "retries", "host", "error")
HOST_COLUMNS = ("uid", "name", "status", "os", "arch", "cpus", "memory_mb", "shared_apps",
                "hypervisors", "access_rights", "last_seen")
DATA_COLUMNS = ("uid", "name", "size", "sha256", "status", "access_rights")
APP_COLUMNS = ("uid", "name", "kind", "binaries", "access_rights")
USER_COLUMNS = ("uid", "login", "rights", "group", "enabled")


def upload(c: Client, path: Path, access_rights: str = "755") -> dict[str, Any]:
    with progress_bar(path.stat().st_size, f"upload {path.name}") as cb:
        return c.upload_data(path, access_rights=access_rights, progress=cb)


format_option = format_option_factory()


def this_platform() -> str:
    return f"{platform.system().lower()}/{normalize_arch(platform.machine())}"


@click.group()
def main() -> None:
    """The user's commands; :mod:`xwvm.cli` adds them to the root command."""


# --- login ------------------------------------------------------------------------------

# `xwvm login` (password or certificate, CA pinning) is in cli_auth, registered below.

@main.command()
@handle_errors
def logout() -> None:
    """Revoke the saved token."""
    with contextlib.suppress(XwvmError):
        client().logout()
    Session.forget()
    click.echo("logged out")


@main.command()
@format_option
@handle_errors
def whoami(fmt: str) -> None:
    output([client().whoami()], USER_COLUMNS, fmt, "user")


# --- apps and data ----------------------------------------------------------------------

@main.group()
def app() -> None:
    """Applications."""


@app.command("send")
@click.argument("name")
@click.option("--file", "files", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="the binary or script (repeatable with --platform)")
@click.option("--platform", "platforms", multiple=True,
              help="os/arch of each --file (default: this machine's)")
@click.option("--shared", is_flag=True, help="an app provided by workers (e.g. root)")
@click.option("--chmod", "mode", default="755", show_default=True)
@click.option("--sign-key", "sign_key", type=click.Path(exists=True, dir_okay=False,
                                                        path_type=Path),
              help="sign the app at once with this Ed25519 private key (see 'xwvm app sign')")
@format_option
@handle_errors
def app_send(name: str, files: tuple[str, ...], platforms: tuple[str, ...], shared: bool,
             mode: str, sign_key: Path | None, fmt: str) -> None:
    """Register an application (workers run a native one only once it is signed)."""
    send_app(name, files, platforms, shared, mode, fmt, sign_key)


def local_binaries(files: tuple[str, ...], platforms: tuple[str, ...]) -> dict[str, Path]:
    if platforms and len(platforms) != len(files):
        fail("give one --platform per --file")
    return {platforms[i] if platforms else this_platform(): Path(f)
            for i, f in enumerate(files)}


def send_app(name: str, files: tuple[str, ...], platforms: tuple[str, ...], shared: bool,
             mode: str, fmt: str, sign_key: Path | None = None) -> None:
    local = local_binaries(files, platforms)
    c = client()
    binaries = {plat: upload(c, path)["uid"] for plat, path in local.items()}
    result = c.create_app(name, binaries, "shared" if shared else "native", mode)
    if sign_key is not None:
        result = sign_app(c, result["uid"], sign_key, local)
    output([result], APP_COLUMNS, fmt, "app")


def sign_app(c: Client, ref: str, key_path: Path,
             local: dict[str, Path] | None = None) -> dict[str, Any]:
    """Sign REF's manifest, computed here from what the server lists, after checking it
    names the local files' content when some are given (then the signature covers the
    bytes on this machine, not the server's word about them)."""
    from xwvm import signing
    from xwvm.protocol.digest import sha256_file
    a = c.get_app(ref)
    manifest = signing.canonical_app_manifest({**a, "binaries": a["signed_binaries"]})
    if manifest != a["manifest"]:
        fail("the server's manifest differs from the one computed from its fields: "
             "refusing to sign")
    if local is not None:
        listed = {f"{b['os']}/{b['arch']}": (b["sha256"], b["size"])
                  for b in a["signed_binaries"]}
        mine = {plat: (sha256_file(p), p.stat().st_size) for plat, p in local.items()}
        if listed != mine:
            fail("the server lists other binaries than the local files: refusing to sign")
    sig = signing.sign(manifest, signing.load_private(key_path))
    signed = c.sign_app(a["uid"], sig.public_key, sig.signature)
    click.echo(f"signed app {a['name']} {a['uid']} with key {sig.key_id}", err=True)
    return signed


@app.command("sign")
@click.argument("ref", callback=path_refs)
@click.option("--key", "key_path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Ed25519 private key (PEM) from 'xwvm admin keygen'")
@click.option("--file", "files", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="check the app's binaries against these local files first (repeatable, "
                   "with --platform)")
@click.option("--platform", "platforms", multiple=True,
              help="os/arch of each --file (default: this machine's)")
@handle_errors
def app_sign(ref: str, key_path: Path, files: tuple[str, ...],
             platforms: tuple[str, ...]) -> None:
    """Sign REF's manifest (its uid, name and each binary's os, arch, sha256, size) so
    that workers trusting the key run it."""
    sign_app(client(), ref, key_path, local_binaries(files, platforms) if files else None)


@app.command("list")
@format_option
@handle_errors
def app_list(fmt: str) -> None:
    output(client().list_apps(), APP_COLUMNS, fmt, "app")


@app.command("rm")
@click.argument("refs", nargs=-1, required=True, callback=path_refs)
@handle_errors
def app_rm(refs: tuple[str, ...]) -> None:
    c = client()
    for ref in refs:
        c.delete_app(ref)
        click.echo(f"removed app {ref}")


@main.group()
def data() -> None:
    """Data."""


@data.command("send")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--chmod", "mode", default="755", show_default=True)
@format_option
@handle_errors
def data_send(files: tuple[str, ...], mode: str, fmt: str) -> None:
    c = client()
    output([upload(c, Path(f), mode) for f in files], DATA_COLUMNS, fmt, "data")


@data.command("list")
@format_option
@handle_errors
def data_list(fmt: str) -> None:
    output(client().list_data(), DATA_COLUMNS, fmt, "data")


@data.command("get")
@click.argument("uid")
@click.option("-o", "--output", "dest", required=True, type=click.Path(path_type=Path))
@handle_errors
def data_get(uid: str, dest: Path) -> None:
    c = client()
    meta = c.get_data(uid)
    with progress_bar(meta["size"] or 0, f"download {meta['name']}") as cb:
        c.download_data(uid, dest, sha256=meta["sha256"], progress=cb)
    click.echo(f"{dest}: {meta['size']} bytes, sha256 verified")


@data.command("rm")
@click.argument("uids", nargs=-1, required=True)
@handle_errors
def data_rm(uids: tuple[str, ...]) -> None:
    c = client()
    for uid in uids:
        c.delete_data(uid)
        click.echo(f"removed data {uid}")


# --- jobs -------------------------------------------------------------------------------

def submit_jobs(app_name: str | None, args: tuple[str, ...], inputs: tuple[str, ...],
                input_data: tuple[str, ...], stdin: str | None, env: tuple[str, ...],
                count: int, wait: bool, timeout: float | None, fmt: str,
                options: dict[str, Any]) -> None:
    macro = options.pop("macro", None)
    if macro:  # a ROOT macro: an input, run in batch mode by the template's or app's ROOT
        if options.get("command"):
            fail("give either --macro or --command")
        inputs = (*inputs, macro)
        options["command"] = f"root -b -q -l {shlex.quote(Path(macro).name)}"
    if not options.get("pilot"):
        options.pop("pilot_idle_s", None)
    if options.get("template"):
        # A VM job has no app: every positional word is an argument of its command.
        if not options.get("command") and not options.get("pilot"):
            fail("--template needs --command or --macro (what to run in the VM), or --pilot")
        args = ((app_name,) if app_name else ()) + args
        app_name = None
    elif not app_name:
        fail("give an APP (native job) or --template with --command (VM job)")
    elif options.get("pilot"):
        fail("--pilot needs --template (a pilot is a VM that serves jobs)")
    c = client()
    ssh_keys = options.pop("ssh_keys", ())
    if ssh_keys:  # an inline context: the keys, and the job's --env in the VM too
        if options.get("context"):
            fail("give either --context or --ssh-key, not both")
        options["context"] = inline_context(c, ssh_keys, parse_env(env),
                                            app_name or options["template"])["uid"]
    # Files uploaded for the job take its rights (--chmod 700: nobody else reads them);
    # the server carries a later chmod of the job to them and to its results.
    mode = options.get("access_rights", "755")
    refs = [{"data": upload(c, Path(f), mode)["uid"], "name": Path(f).name} for f in inputs]
    for item in input_data:
        uid, _, name = item.partition(":")
        refs.append({"data": uid, "name": name or c.get_data(uid)["name"]})
    stdin_uid = upload(c, Path(stdin), mode)["uid"] if stdin else None
    spec = dict(args=list(args), env=parse_env(env), inputs=refs, stdin=stdin_uid, **options)
    works = [c.submit(app_name, **spec) for _ in range(count)]
    if wait:
        works = c.wait([w["uid"] for w in works], timeout=timeout)
    output(works, WORK_COLUMNS, fmt, "work")
    if wait and any(w["status"] != JobStatus.COMPLETED for w in works):
        sys.exit(1)


def submit_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.argument("app_name", metavar="[APP]", required=False),
        click.argument("args", nargs=-1),
        click.option("--template", help="run a VM job from this template (NAME[:VERSION] or "
                                        "id) instead of a native APP"),
        click.option("--command", help="VM jobs and shared apps: the shell command to run "
                                       "(ARGS follow it)"),
        click.option("--macro", type=click.Path(exists=True, dir_okay=False),
                     help="a ROOT macro: uploaded, then run with `root -b -q` (ROOT template "
                          "or the shared app root)"),
        click.option("--pilot", is_flag=True,
                     help="with --template: a pilot VM that runs your jobs of the template's "
                          "shared apps (e.g. root) until idle"),
        click.option("--pilot-idle", "pilot_idle_s", type=int, default=DEFAULT_PILOT_IDLE_S,
                     show_default=True, help="a pilot powers off after this many idle seconds"),
        click.option("--network", type=click.Choice([p.value for p in NetworkPolicy]),
                     default=str(NetworkPolicy.SERVER), show_default=True,
                     help="VM jobs: what the guest may reach"),
        click.option("--input", "inputs", multiple=True,
                     type=click.Path(exists=True, dir_okay=False),
                     help="a local file uploaded and placed in the job's directory"),
        click.option("--input-data", multiple=True, metavar="UID[:NAME]",
                     help="an existing data object as an input"),
        click.option("--stdin", type=click.Path(exists=True, dir_okay=False)),
        click.option("--env", multiple=True, metavar="NAME=VALUE"),
        click.option("--count", type=int, default=1, show_default=True),
        click.option("--wait", is_flag=True, help="wait until the jobs end"),
        click.option("--timeout", type=float, help="with --wait: give up after seconds"),
        click.option("--wall-clock", "wall_clock_s", type=WALL_CLOCK,
                     help="seconds, or with a unit: 90s, 30m, 2h, 1d"),
        click.option("--max-retries", type=int),
        click.option("--min-memory", "min_memory_mb", type=int, default=0, help="MB"),
        click.option("--min-cpus", type=int, default=0),
        click.option("--min-disk", "min_disk_mb", type=int, default=0, help="MB"),
        click.option("--host", "expected_host", help="run only on this host id"),
        click.option("--label"),
        click.option("--hold", is_flag=True, help="submit as WAITING"),
        click.option("--listen-port", type=int, help="stored for internode connections"),
        click.option("--chmod", "access_rights", default="755", show_default=True),
        click.option("--context", help="the id of a VM context (xwvm context create)"),
        click.option("--ssh-key", "ssh_keys", multiple=True,
                     type=click.Path(exists=True, dir_okay=False),
                     help="an SSH public key file for an inline context (repeatable; "
                     "the context also gets --env)"),
        format_option,
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


@main.command(context_settings={"ignore_unknown_options": False})
@submit_options
@handle_errors
def submit(app_name: str, args: tuple[str, ...], inputs: tuple[str, ...],
           input_data: tuple[str, ...], stdin: str | None, env: tuple[str, ...], count: int,
           wait: bool, timeout: float | None, fmt: str, **options: Any) -> None:
    """Submit COUNT jobs: of a native APP, or (--template T --command C) VM jobs. ARGS go
    after --."""
    submit_jobs(app_name, args, inputs, input_data, stdin, env, count, wait, timeout, fmt,
                options)


@main.command()
@click.argument("uids", nargs=-1)
@click.option("--status", help="only jobs in this status")
@format_option
@handle_errors
def works(uids: tuple[str, ...], status: str | None, fmt: str) -> None:
    """List jobs (yours, or the given ones)."""
    output(client().list_works(list(uids) or None, status), WORK_COLUMNS, fmt, "work")


def safe_extract(archive: Path, dest: Path) -> list[str]:
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
        return tar.getnames()


@main.command()
@click.argument("uid")
@click.option("-o", "--output", "dest", required=True, type=click.Path(path_type=Path))
@handle_errors
def results(uid: str, dest: Path) -> None:
    """Download a job's results into a directory."""
    fetch_results(uid, dest)


def fetch_results(uid: str, dest: Path, quiet: bool = False) -> list[str]:
    c = client()
    with tempfile.TemporaryDirectory() as tmp:
        archive = c.download_result(uid, Path(tmp) / "results.tar.gz")
        names = safe_extract(archive, dest)
    if not quiet:
        click.echo(f"{dest}: {len(names)} files from job {uid}")
    return names


for _action in ("abort", "hold", "release"):
    def _make(action: str) -> None:
        @main.command(action, help=f"{action.capitalize()} jobs.")
        @click.argument("uids", nargs=-1, required=True)
        @handle_errors
        def _cmd(uids: tuple[str, ...]) -> None:
            c = client()
            for uid in uids:
                w = c.work_action(uid, action)
                click.echo(f"{uid} {w['status']}")
    _make(_action)


@main.command()
@click.argument("uids", nargs=-1, required=True)
@handle_errors
def rm(uids: tuple[str, ...]) -> None:
    """Remove jobs (aborting unfinished ones) and their results."""
    c = client()
    for uid in uids:
        c.delete_work(uid)
        click.echo(f"removed {uid}")


@main.command()
@click.argument("mode")
@click.argument("uids", nargs=-1, required=True)
@handle_errors
def chmod(mode: str, uids: tuple[str, ...]) -> None:
    """Change access rights: 700, 750, 755, g+rx, o-rwx, +t ..."""
    c = client()
    for uid in uids:
        r = c.chmod(uid, mode)
        click.echo(f"{uid} ({r['kind']}) {r['access_rights']}")


@main.command()
@format_option
@handle_errors
def workers(fmt: str) -> None:
    """List worker hosts."""
    output(client().list_hosts(), HOST_COLUMNS, fmt, "host")


@main.command()
@click.option("--object", "obj", help="events of this object only")
@click.option("--since", type=int, default=0)
@format_option
@handle_errors
def events(obj: str | None, since: int, fmt: str) -> None:
    """Read the event log."""
    rows = client().events(obj, since)
    output(rows, ("id", "at", "kind", "object", "from", "to", "detail"), fmt, "event")


# --- users and groups -------------------------------------------------------------------

@main.group()
def user() -> None:
    """User accounts."""


@user.command("add")
@click.argument("login")
@click.option("--rights", default="standard", show_default=True)
@click.option("--group")
@click.option("--password-file", required=True, type=click.Path(exists=True))
@click.option("--public", is_flag=True,
              help="a worker account that runs public jobs of anyone (super users only; "
                   "otherwise a worker is confined to its group, else to you)")
@handle_errors
def user_add(login: str, rights: str, group: str | None, password_file: str,
             public: bool) -> None:
    u = client().create_user(login, read_secret(password_file), rights, group, public)
    click.echo(f"created user {u['login']} ({u['rights']}) {u['uid']}")


@user.command("list")
@format_option
@handle_errors
def user_list(fmt: str) -> None:
    output(client().list_users(), USER_COLUMNS, fmt, "user")


@main.group()
def group() -> None:
    """User groups (projects)."""


@group.command("add")
@click.argument("name")
@handle_errors
def group_add(name: str) -> None:
    g = client().create_group(name)
    click.echo(f"created group {g['name']} {g['uid']}")


@group.command("list")
@format_option
@handle_errors
def group_list(fmt: str) -> None:
    output(client().list_groups(), ("uid", "name", "owner"), fmt, "group")


main.add_command(context_group)
main.add_command(cli_auth.login)  # and user passwd|disable|enable, admin issue-cert|...
for _cmd in cli_auth.USER_COMMANDS:
    user.add_command(_cmd)
main.add_command(template_group)
main.add_command(template_store.admin_group)  # and the template push|pull|... commands

