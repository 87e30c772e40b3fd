"""`xwvm context`: create, show, list and remove VM contexts, and write preview context ISOs.

A context document (SSH public keys, environment, network, hostname, files) is checked
here with the contextualizer's own schema before it is uploaded, so mistakes show up
with their field paths without a round trip; the server checks it again.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import click
import yaml

from contextualizer import (
    ContextError,
    JobSpec,
    Limits,
    Payload,
    build_job_context,
    validate_user_context,
    write_iso,
)
from xwvm.client import cli_common as common
from xwvm.client import formats
from xwvm.client.cli_common import client, output, parse_env, refs, resolve
from xwvm.client.sdk import Client
from xwvm.client.session import Session
from xwvm.errors import XwvmError
from xwvm.protocol import NetworkPolicy

CONTEXT_COLUMNS = ("uid", "name", "owner", "access_rights", "created_at")
NETWORKS = [p.value for p in NetworkPolicy]
PREVIEW_SERVER = "https://localhost"
PREVIEW_CA = "preview-no-ca"
PREVIEW_CREDENTIAL = "preview-no-credential"


class InvalidContext(click.ClickException):
    """A context document with problems: one line per issue, each naming its field."""

    def __init__(self, source: str, issues: Iterable[tuple[str, str]]) -> None:
        lines = [f"{source}: invalid context document"]
        lines += [f"  {path}: {message}" for path, message in issues]
        super().__init__("\n".join(lines))


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """As everywhere (cli_common), plus local schema errors listed path by path."""
    @functools.wraps(fn)
    def wrapper(*a: Any, **kw: Any) -> Any:
        try:
            return fn(*a, **kw)
        except ContextError as e:
            raise InvalidContext(e.message, [(i.path, i.message) for i in e.issues]) from None
        except ValueError as e:
            raise click.ClickException(str(e)) from None
    return common.handle_errors(wrapper)


def optional_session() -> Session | None:
    try:
        return Session.load()
    except XwvmError:
        return None


# --- building a document from a file and flags --------------------------------------------

def load_document(path: Path) -> dict[str, Any]:
    """A context document from a YAML or JSON file (YAML is a superset of JSON)."""
    text = path.read_text(encoding="utf-8")
    try:
        doc = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:
        raise click.ClickException(f"{path}: not valid {path.suffix[1:] or 'YAML'}: {e}"
                                   ) from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise click.ClickException(f"{path}: a context document must be a mapping "
                                   f"(ssh_authorized_keys, env, network, hostname, files)")
    return doc


def read_keys(path: Path) -> list[str]:
    """The public keys of an OpenSSH .pub or authorized_keys file (one per line)."""
    keys = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.lstrip().startswith("#")]
    if not keys:
        raise click.ClickException(f"{path}: no SSH public key in it")
    return keys


def build_document(file: Path | None = None, ssh_keys: Iterable[Path] = (),
                   env: dict[str, str] | None = None, network: str | None = None,
                   hostname: str | None = None) -> dict[str, Any]:
    """The file's document with the flags merged in: keys added, env entries set (flags
    win), network and hostname replaced."""
    doc = load_document(file) if file else {}
    keys = doc.get("ssh_authorized_keys") or []
    if ssh_keys and isinstance(keys, list):  # (a non-list is left for validation to name)
        keys = list(keys)
        for path in ssh_keys:
            keys += [k for k in read_keys(Path(path)) if k not in keys]
        doc["ssh_authorized_keys"] = keys
    if env:
        base = doc.get("env") if isinstance(doc.get("env"), dict) else {}
        doc["env"] = {**base, **env}
    if network:
        doc["network"] = network
    if hostname:
        doc["hostname"] = hostname
    return doc


def check_locally(doc: dict[str, Any], source: str) -> None:
    issues = validate_user_context(doc)
    if issues:
        raise InvalidContext(source, [(i.path, i.message) for i in issues])


def inline_context(c: Client, key_files: Iterable[Path], env: dict[str, str],
                   name: str) -> dict[str, Any]:
    """A private context made from ``submit --ssh-key ... --env ...`` (validated first)."""
    doc = build_document(None, key_files, env)
    check_locally(doc, "--ssh-key/--env")
    return c.create_context(f"inline-{name}", doc, "700")


# --- commands -----------------------------------------------------------------------------

@click.group("context")
def context() -> None:
    """VM contexts: SSH keys, environment, network and files for VM jobs."""


@context.command("create")
@click.argument("name")
@click.option("--file", "file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="a context document in YAML or JSON; the flags below are merged into it")
@click.option("--ssh-key", "ssh_keys", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="an OpenSSH public key file (repeatable)")
@click.option("--env", "env", multiple=True, metavar="NAME=VALUE",
              help="an environment variable for the VM (repeatable; where secrets go)")
@click.option("--network", type=click.Choice(NETWORKS), help="the VM's network policy")
@click.option("--hostname", help="the VM's host name (an RFC 1123 label)")
@click.option("--chmod", "mode", default="700", show_default=True,
              help="access rights (contexts may hold secrets: private by default)")
@click.option("--format", "fmt", type=click.Choice(formats.FORMATS), default="table",
              show_default=True, help="output format")
@handle_errors
def context_create(name: str, file: Path | None, ssh_keys: tuple[Path, ...],
                   env: tuple[str, ...], network: str | None, hostname: str | None, mode: str,
                   fmt: str) -> None:
    """Create a context on the server (validated here first, then by the server)."""
    doc = build_document(file, ssh_keys, parse_env(env), network, hostname)
    check_locally(doc, str(file) if file else "context")
    c = client()
    output([c.create_context(name, doc, mode)], CONTEXT_COLUMNS, fmt, "context", c)


@context.command("show")
@click.argument("uid", metavar="CONTEXT", callback=refs("context"))
@click.option("--format", "fmt", type=click.Choice(("yaml", "json")), default="yaml",
              show_default=True)
@handle_errors
def context_show(uid: str, fmt: str) -> None:
    """Show a context (an id, xw:// URI or the name of one of yours) and its document."""
    view = client().get_context(uid)
    if fmt == "json":
        click.echo(json.dumps(view, indent=2, sort_keys=True))
    else:
        click.echo(yaml.safe_dump(view, sort_keys=False, allow_unicode=True).rstrip("\n"))


@context.command("list")
@click.option("--format", "fmt", type=click.Choice(formats.FORMATS), default="table",
              show_default=True, help="output format")
@handle_errors
def context_list(fmt: str) -> None:
    """List the contexts you can read."""
    c = client()
    output(c.list_contexts(), CONTEXT_COLUMNS, fmt, "context", c)


@context.command("rm")
@click.argument("uids", nargs=-1, required=True, metavar="CONTEXT...",
                callback=refs("context"))
@handle_errors
def context_rm(uids: tuple[str, ...]) -> None:
    """Remove contexts (ids, xw:// URIs or names of yours; refused while an unfinished job
    uses one)."""
    c = client()
    for uid in uids:
        c.delete_context(uid)
        click.echo(f"removed context {uid}")


def preview_job(job_uid: str | None, session: Session | None) -> JobSpec:
    """Placeholders for the job side of a preview ISO: no real job, no real credential."""
    ca = PREVIEW_CA
    if session and session.ca and Path(session.ca).is_file():
        ca = Path(session.ca).read_text()
    return JobSpec(job_uid=job_uid or str(uuid.uuid4()),
                   owner=session.login if session else "preview", app="preview",
                   server_url=session.server if session else PREVIEW_SERVER,
                   server_ca_pem=ca, credential=PREVIEW_CREDENTIAL,
                   payload=Payload(command="/bin/true"),
                   limits=Limits(wall_clock_seconds=3600, cpus=1, memory_mb=1024,
                                 disk_mb=4096))


@context.command("iso")
@click.argument("source", metavar="CONTEXT_OR_FILE")
@click.option("-o", "--output", "dest", required=True,
              type=click.Path(dir_okay=False, path_type=Path), help="the ISO file to write")
@click.option("--job-uid", help="instance id to use (default: a fresh random UUID)")
@handle_errors
def context_iso(source: str, dest: Path, job_uid: str | None) -> None:
    """Write a PREVIEW context ISO of a context (on the server: an id, xw:// URI or name of
    yours; or a local YAML/JSON file).

    It is the ISO a VM job would boot with, except that the job side holds placeholders:
    job uid (--job-uid or random), owner (your login or "preview"), app "preview", the
    saved server URL and CA (or https://localhost), credential "preview-no-credential",
    payload /bin/true. Use it to try a context on a local VM or with cloud-init; a worker
    builds the real ISO of a job. A FILE needs no login.
    """
    session = optional_session()
    path = Path(source)
    if path.is_file():
        doc = load_document(path)
        check_locally(doc, source)
    elif session is None:
        raise click.ClickException(f"{source} is not a file, and reading a context from the "
                                   "server needs a login: run 'xwvm login' first")
    else:
        c = session.client()
        doc = c.get_context(resolve(c, source, "context"))["document"]
    ctx = build_job_context(doc, preview_job(job_uid, session))
    write_iso(ctx, dest)
    click.echo(f"{dest}: preview context ISO, {dest.stat().st_size} bytes, job {ctx.job_uid}, "
               f"network {ctx.network.value}, {len(ctx.ssh_authorized_keys)} SSH key(s)")
