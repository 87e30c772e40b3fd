"""The user's `xwvm` commands: login, apps, data, jobs, results, users and groups (the
context, template and admin groups come from the other cli_* modules). The root command
(:mod:`xwvm.cli`) adds them next to the server's and the worker's groups."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shlex
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from xwvm.client import cli_auth, cli_objects, cli_why
from xwvm.client import cli_template_store as template_store
from xwvm.client.cli_common import (
    WALL_CLOCK,
    client,
    fail,
    handle_errors,
    output,
    parse_env,
    progress_bar,
    read_secret,
    refs,
    resolve,
)
from xwvm.client.cli_common import format_option as format_option_factory
from xwvm.client.cli_context import context as context_group
from xwvm.client.cli_context import inline_context
from xwvm.client.cli_template import template_group
from xwvm.client.sdk import ApiError, Client
from xwvm.client.session import Session
from xwvm.errors import XwvmError
from xwvm.ids import check_file_name
from xwvm.protocol import DEFAULT_PILOT_IDLE_S, JobStatus, NetworkPolicy
from xwvm.protocol.platforms import UnknownPlatform, check_platform, normalize_arch

WORK_COLUMNS = ("uid", "status", "owner", "app", "label", "exit_code", "retries", "host",
                "error")
HOST_COLUMNS = ("uid", "name", "status", "os", "arch", "cpus", "memory_mb", "shared_apps",
                "hypervisors", "access_rights", "last_seen")
DATA_COLUMNS = ("uid", "name", "owner", "size", "sha256", "status", "access_rights")
APP_COLUMNS = ("uid", "name", "owner", "kind", "version", "binaries", "access_rights")
USER_COLUMNS = ("uid", "login", "rights", "group", "enabled")
STATUS_COLUMNS = ("uid", "status")
RM_COLUMNS = ("uid", "kind", "removed")
CHMOD_COLUMNS = ("uid", "kind", "access_rights")
RESULT_COLUMNS = ("uid", "path", "files")
#: The rights levels a user may be given (the server's, by their documented names; the
#: server also reads older aliases such as "admin", which the CLI refuses as ambiguous).
RIGHTS_LEVELS = ("standard", "worker", "vworker", "group_admin", "super")
#: What `xwvm results` writes into a folder it extracted: the job and the paths it put there.
RESULTS_MARKER = ".xwvm-results"


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
    c = client()
    output([c.whoami()], USER_COLUMNS, fmt, "user", c)


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
    """The binaries by platform, each platform checked before a byte is uploaded."""
    if platforms and len(platforms) != len(files):
        fail("give one --platform per --file")
    local = {platforms[i] if platforms else this_platform(): Path(f)
             for i, f in enumerate(files)}
    for plat in local:
        try:
            check_platform(plat)
        except UnknownPlatform as e:
            fail(str(e))
    return local


def send_app(name: str, files: tuple[str, ...], platforms: tuple[str, ...], shared: bool,
             mode: str, fmt: str, sign_key: Path | None = None) -> None:
    local = local_binaries(files, platforms)
    c = client()
    binaries = {plat: upload(c, path)["uid"] for plat, path in local.items()}
    result = c.create_app(name, binaries, "shared" if shared else "native", mode)
    if sign_key is not None:
        result = sign_app(c, result["uid"], sign_key, local)
    output([result], APP_COLUMNS, fmt, "app", c)


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
@click.argument("ref", callback=refs("app"))
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
    c = client()
    output(c.list_apps(), APP_COLUMNS, fmt, "app", c)


@app.command("rm")
@click.argument("names", nargs=-1, required=True, callback=refs("app"))
@handle_errors
def app_rm(names: tuple[str, ...]) -> None:
    """Remove apps (NAME, id or xw:// URI)."""
    c = client()
    for ref in names:
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
    output([upload(c, Path(f), mode) for f in files], DATA_COLUMNS, fmt, "data", c)


@data.command("list")
@format_option
@handle_errors
def data_list(fmt: str) -> None:
    c = client()
    output(c.list_data(), DATA_COLUMNS, fmt, "data", c)


@data.command("get")
@click.argument("uid", metavar="DATA", callback=refs("data"))
@click.option("-o", "--output", "dest", required=True, type=click.Path(path_type=Path),
              help="a file, or an existing folder (then the file takes the data's name, "
                   "and a file of that name there is never replaced)")
@handle_errors
def data_get(uid: str, dest: Path) -> None:
    """Download DATA (id, xw:// URI, or the name of one of yours), sha256 verified."""
    c = client()
    meta = c.get_data(uid)
    target = dest / check_file_name(meta["name"], "data") if dest.is_dir() else dest
    if dest.is_dir() and (target.exists() or target.is_symlink()):
        # the name is the data's (its owner's, or a server's): never over a file of yours
        fail(f"{target} exists: give -o a file name to replace it, or another folder")
    part = target.with_name(target.name + ".part")
    try:
        with progress_bar(meta["size"] or 0, f"download {meta['name']}") as cb:
            c.download_data(uid, target, sha256=meta["sha256"], progress=cb)
    except BaseException:  # nothing half-written: not even the resumable .part
        part.unlink(missing_ok=True)
        raise
    click.echo(f"{target}: {meta['size']} bytes, sha256 verified")


@data.command("rm")
@click.argument("uids", nargs=-1, required=True, metavar="DATA...", callback=refs("data"))
@handle_errors
def data_rm(uids: tuple[str, ...]) -> None:
    """Remove data objects (ids, xw:// URIs or names of yours)."""
    c = client()
    for uid in uids:
        c.delete_data(uid)
        click.echo(f"removed data {uid}")


# --- jobs -------------------------------------------------------------------------------

def job_spec(app_name: str | None, args: tuple[str, ...],
             options: dict[str, Any]) -> tuple[str | None, tuple[str, ...]]:
    """The app (None for a VM job) and arguments, after checking the options fit."""
    macro = options.pop("macro", None)
    if macro:  # a ROOT macro: an input, run in batch mode by the template's or app's ROOT
        if options.get("command"):
            fail("give either --macro or --command")
        options["inputs"] = (*options["inputs"], macro)
        options["command"] = f"root -b -q -l {shlex.quote(Path(macro).name)}"
    if not options.get("pilot"):
        options.pop("pilot_idle_s", None)
    if options.get("template"):
        # A VM job has no app: every positional word is an argument of its command.
        if not options.get("command") and not options.get("pilot"):
            fail("--template needs --command or --macro (what to run in the VM), or --pilot")
        return None, ((app_name,) if app_name else ()) + args
    if not app_name:
        fail("give an APP (native job) or --template with --command (VM job)")
    if options.get("pilot"):
        fail("--pilot needs --template (a pilot is a VM that serves jobs)")
    return app_name, args


def input_refs(c: Client, inputs: tuple[str, ...], input_data: tuple[str, ...],
               mode: str) -> list[dict[str, str]]:
    """Files uploaded for the job (with its rights: --chmod 700 and nobody else reads them;
    the server carries a later chmod of the job to them), then existing data objects given
    as ``REF[:NAME]`` (REF: an id, an xw:// URI or the name of one of yours)."""
    out = [{"data": upload(c, Path(f), mode)["uid"], "name": Path(f).name} for f in inputs]
    for item in input_data:
        head, tail = ("xw://", item[5:]) if item[:5].lower() == "xw://" else ("", item)
        if head:  # the URI's own colon is not the NAME separator
            server, _, rest = tail.rpartition("/")
            head, tail = f"xw://{server}/", rest
        ref, _, name = tail.partition(":")
        uid = resolve(c, head + ref, "data")
        out.append({"data": uid, "name": name or c.get_data(uid)["name"]})
    return out


def wait_or_tell(c: Client, works: list[dict[str, Any]], timeout: float | None,
                 fmt: str) -> list[dict[str, Any]]:
    """The jobs once final; on a timeout their rows as they are, and an error that names
    them (they go on running: follow them with `xwvm works`)."""
    uids = [w["uid"] for w in works]
    try:
        return c.wait(uids, timeout=timeout)
    except ApiError as e:
        if e.code != "wait_timeout":
            raise
    output(c.list_works(uids), WORK_COLUMNS, fmt, "work", c)
    fail(f"timed out after {timeout:g} s waiting for {len(uids)} job(s), which go on: "
         f"follow them with 'xwvm works {' '.join(uids)}'")
    raise AssertionError("unreachable")


def submit_jobs(app_name: str | None, args: tuple[str, ...], inputs: tuple[str, ...],
                input_data: tuple[str, ...], stdin: str | None, env: tuple[str, ...],
                count: int, wait: bool, timeout: float | None, fmt: str,
                options: dict[str, Any]) -> None:
    options["inputs"] = inputs
    app_name, args = job_spec(app_name, args, options)
    inputs = options.pop("inputs")
    c = client()
    if app_name:
        app_name = resolve(c, app_name, "app")
    if options.get("template"):
        options["template"] = resolve(c, options["template"], "template")
    if options.get("context"):
        options["context"] = resolve(c, options["context"], "context")
    if options.get("expected_host"):
        options["expected_host"] = resolve(c, options["expected_host"], "host")
    ssh_keys = options.pop("ssh_keys", ())
    if ssh_keys:  # an inline context: the keys, and the job's --env in the VM too
        if options.get("context"):
            fail("give either --context or --ssh-key, not both")
        options["context"] = inline_context(c, ssh_keys, parse_env(env),
                                            app_name or options["template"])["uid"]
    mode = options.get("access_rights", "755")
    refs_ = input_refs(c, inputs, input_data, mode)
    stdin_uid = upload(c, Path(stdin), mode)["uid"] if stdin else None
    spec = dict(args=list(args), env=parse_env(env), inputs=refs_, stdin=stdin_uid, **options)
    works = [c.submit(app_name, **spec) for _ in range(count)]
    if wait:
        works = wait_or_tell(c, works, timeout, fmt)
    output(works, WORK_COLUMNS, fmt, "work", c)
    if wait and any(w["status"] != JobStatus.COMPLETED for w in works):
        sys.exit(1)


COUNT = click.IntRange(min=0)


SUBMIT_OPTIONS = [
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
    click.option("--pilot-idle", "pilot_idle_s", type=click.IntRange(min=1),
                 default=DEFAULT_PILOT_IDLE_S, show_default=True,
                 help="a pilot powers off after this many idle seconds"),
    click.option("--network", type=click.Choice([p.value for p in NetworkPolicy]),
                 default=str(NetworkPolicy.SERVER), show_default=True,
                 help="VM jobs: what the guest may reach"),
    click.option("--input", "inputs", multiple=True,
                 type=click.Path(exists=True, dir_okay=False),
                 help="a local file uploaded and placed in the job's directory"),
    click.option("--input-data", multiple=True, metavar="DATA[:NAME]",
                 help="an existing data object (id, xw:// URI or name of yours) as an "
                      "input"),
    click.option("--stdin", type=click.Path(exists=True, dir_okay=False)),
    click.option("--env", multiple=True, metavar="NAME=VALUE"),
    click.option("--count", type=click.IntRange(min=1), default=1, show_default=True),
    click.option("--wait", is_flag=True, help="wait until the jobs end"),
    click.option("--timeout", type=click.FloatRange(min=0, min_open=True),
                 help="with --wait: give up waiting after seconds (the jobs go on)"),
    click.option("--wall-clock", "wall_clock_s", type=WALL_CLOCK,
                 help="seconds, or with a unit: 90s, 30m, 2h, 1d"),
    click.option("--max-retries", type=COUNT),
    click.option("--min-memory", "min_memory_mb", type=COUNT, default=0, help="MB"),
    click.option("--min-cpus", type=COUNT, default=0),
    click.option("--min-disk", "min_disk_mb", type=COUNT, default=0, help="MB"),
    click.option("--host", "expected_host", help="run only on this host (id or xw:// URI)"),
    click.option("--label"),
    click.option("--hold", is_flag=True, help="submit as WAITING"),
    click.option("--listen-port", type=click.IntRange(1, 65535),
                 help="stored for internode connections"),
    click.option("--chmod", "access_rights", default="755", show_default=True),
    click.option("--context", help="a VM context (xwvm context create): its id, xw:// URI "
                                   "or name (one of yours)"),
    click.option("--ssh-key", "ssh_keys", multiple=True,
                 type=click.Path(exists=True, dir_okay=False),
                 help="an SSH public key file for an inline context (repeatable; "
                 "the context also gets --env)"),
    format_option,
]


def submit_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for opt in reversed(SUBMIT_OPTIONS):
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
@click.argument("uids", nargs=-1, metavar="[JOB]...", callback=refs("job"))
@click.option("--status", help="only jobs in this status")
@format_option
@handle_errors
def works(uids: tuple[str, ...], status: str | None, fmt: str) -> None:
    """List jobs (yours, or the given ones: ids or xw:// URIs)."""
    c = client()
    rows = c.list_works(list(uids) or None, status)
    if rows or not uids:
        output(rows, WORK_COLUMNS, fmt, "work", c)
    missing = [u for u in dict.fromkeys(uids) if u not in {r["uid"] for r in rows}]
    if missing and not status:
        fail("no such job (or not readable): " + ", ".join(missing))


def extracted(folder: Path) -> set[str]:
    """Every path below ``folder`` (relative, with /), the results marker aside."""
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")} - {RESULTS_MARKER}


def check_results_dest(dest: Path) -> None:
    """A folder results may go to: new, empty, or holding nothing but what an earlier
    `xwvm results` put there (it is then replaced whole: no stale file of that job stays)."""
    if not dest.exists() and not dest.is_symlink():
        return
    if not dest.is_dir() or dest.is_symlink():
        fail(f"{dest} exists and is not a folder")
    have = extracted(dest)
    marker = dest / RESULTS_MARKER
    if not marker.is_file():
        if have:
            fail(f"{dest} is not empty: give a new or empty folder (results would mix with "
                 "what is there)")
        return
    try:
        earlier = set(json.loads(marker.read_text())["paths"])
    except (ValueError, KeyError, TypeError):
        fail(f"{marker} is damaged: give a new or empty folder")
        raise
    extra = sorted(have - earlier)
    if extra:
        fail(f"{dest} holds files that earlier results did not put there "
             f"({', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}): give a new or "
             "empty folder")


def safe_extract(archive: Path, dest: Path, job: str) -> list[str]:
    """Extract into a fresh folder beside ``dest``, then put it in ``dest``'s place: a
    failure leaves ``dest`` as it was, a success leaves only this job's files."""
    check_results_dest(dest)
    parent = dest.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(dir=parent, prefix=f".{dest.name}.new-"))
    try:
        umask = os.umask(0)
        os.umask(umask)
        fresh.chmod(0o777 & ~umask)
        with tarfile.open(archive) as tar:
            tar.extractall(fresh, filter="data")
            names = tar.getnames()
        (fresh / RESULTS_MARKER).write_text(json.dumps(
            {"job": job, "paths": sorted(extracted(fresh))}, indent=1) + "\n")
        if dest.exists():
            old = Path(tempfile.mkdtemp(dir=parent, prefix=f".{dest.name}.old-"))
            dest.rename(old / "results")
            fresh.rename(dest)
            shutil.rmtree(old)
        else:
            fresh.rename(dest)
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise
    return names


@main.command()
@click.argument("uid", metavar="JOB", callback=refs("job"))
@click.option("-o", "--output", "dest", required=True, type=click.Path(path_type=Path),
              help="a new or empty folder, or one an earlier 'xwvm results' filled (it is "
                   "then replaced)")
@format_option
@handle_errors
def results(uid: str, dest: Path, fmt: str) -> None:
    """Download a job's results (JOB: an id or xw:// URI) into a folder."""
    names = fetch_results(uid, dest, quiet=True)
    if fmt == "table":
        click.echo(f"{dest}: {len(names)} files from job {uid}")
    else:
        output([{"uid": uid, "path": str(dest), "files": len(names)}], RESULT_COLUMNS, fmt,
               "result")


def fetch_results(uid: str, dest: Path, quiet: bool = False) -> list[str]:
    c = client()
    check_results_dest(dest)  # before the download
    with tempfile.TemporaryDirectory() as tmp:
        archive = c.download_result(uid, Path(tmp) / "results.tar.gz")
        names = safe_extract(archive, dest, uid)
    if not quiet:
        click.echo(f"{dest}: {len(names)} files from job {uid}")
    return names


for _action in ("abort", "hold", "release"):
    def _make(action: str) -> None:
        @main.command(action, help=f"{action.capitalize()} jobs (ids or xw:// URIs).")
        @click.argument("uids", nargs=-1, required=True, metavar="JOB...",
                        callback=refs("job"))
        @format_option
        @handle_errors
        def _cmd(uids: tuple[str, ...], fmt: str) -> None:
            c = client()
            rows = [c.work_action(uid, action) for uid in uids]
            output(rows, STATUS_COLUMNS, fmt, "work")
    _make(_action)


@main.command()
@click.argument("uids", nargs=-1, required=True, metavar="JOB...", callback=refs("job"))
@format_option
@handle_errors
def rm(uids: tuple[str, ...], fmt: str) -> None:
    """Remove jobs (ids or xw:// URIs; unfinished ones are aborted) and their results."""
    c = client()
    rows = []
    for uid in uids:
        c.delete_work(uid)
        rows.append({"uid": uid, "kind": "job", "removed": True})
    output(rows, RM_COLUMNS, fmt, "removed")


@main.command()
@click.argument("mode")
@click.argument("uids", nargs=-1, required=True, metavar="OBJECT...",
                callback=refs("object"))
@format_option
@handle_errors
def chmod(mode: str, uids: tuple[str, ...], fmt: str) -> None:
    """Change access rights (MODE: 700, 750, 755, g+rx, o-rwx, +t ...) of objects: ids,
    xw:// URIs, or the name of an app, template, or data object or context of yours."""
    c = client()
    output([c.chmod(uid, mode) for uid in uids], CHMOD_COLUMNS, fmt, "object")


@main.command()
@format_option
@handle_errors
def workers(fmt: str) -> None:
    """List worker hosts."""
    c = client()
    output(c.list_hosts(), HOST_COLUMNS, fmt, "host", c)


@main.command()
@click.option("--object", "obj", callback=refs("object"),
              help="events of this object only (an id, xw:// URI or name as for chmod)")
@click.option("--since", type=int, default=0)
@format_option
@handle_errors
def events(obj: str | None, since: int, fmt: str) -> None:
    """Read the event log (of one object; all of it: super users)."""
    try:
        rows = client().events(obj, since)
    except ApiError as e:
        if e.code == "bad_query" and not obj:
            fail("give --object OBJECT: only super users read the whole log")
        raise
    output(rows, ("id", "at", "kind", "object", "from", "to", "detail"), fmt, "event")


# --- users and groups -------------------------------------------------------------------

@main.group()
def user() -> None:
    """User accounts."""


@user.command("add")
@click.argument("login")
@click.option("--rights", type=click.Choice(RIGHTS_LEVELS, case_sensitive=False),
              default="standard", show_default=True,
              help="standard: submits jobs; worker, vworker: runs them; group_admin: "
                   "manages its group; super: administers the server")
@click.option("--group")
@click.option("--password-file", required=True, type=click.Path(exists=True))
@click.option("--public", is_flag=True,
              help="a worker account that runs public jobs of anyone (super users only; "
                   "otherwise a worker is confined to its group, else to you)")
@format_option
@handle_errors
def user_add(login: str, rights: str, group: str | None, password_file: str,
             public: bool, fmt: str) -> None:
    """Create an account (super users; group admins in their group)."""
    c = client()
    u = c.create_user(login, read_secret(password_file), rights.lower(), group, public)
    if fmt == "table":
        click.echo(f"created user {u['login']} ({u['rights']}) {u['uid']}")
    else:
        output([u], USER_COLUMNS, fmt, "user")


@user.command("list")
@format_option
@handle_errors
def user_list(fmt: str) -> None:
    c = client()
    output(c.list_users(), USER_COLUMNS, fmt, "user", c)


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
    c = client()
    output(c.list_groups(), ("uid", "name", "owner"), fmt, "group", c)


main.add_command(context_group)
main.add_command(cli_auth.login)  # and user passwd|disable|enable, admin issue-cert|...
for _cmd in cli_auth.USER_COMMANDS:
    user.add_command(_cmd)
main.add_command(template_group)
main.add_command(template_store.admin_group)  # and the template push|pull|... commands

cli_objects.register(main)  # host rm, user rm, group rm, app update
cli_why.register(main)  # why JOB
