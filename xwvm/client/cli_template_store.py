"""`xwvm template push|pull|list|show|sign|publish|deprecate|rm` and `xwvm admin keygen`:
the server side of templates, from the admin's shell.

``push`` uploads each artifact through a resumable upload session and remembers the
session ids in the client's configuration directory (``uploads.json``), so running the
same push again after a crash continues where the server's offset says.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from xwvm import signing
from xwvm.client import formats
from xwvm.client.cli_common import (
    client,
    handle_errors,
    output,
    progress_bar,
    refs,
    with_names,
)
from xwvm.client.cli_common import format_option as format_option_factory
from xwvm.client.cli_template import template_group
from xwvm.client.sdk import Client
from xwvm.client.session import config_dir
from xwvm.protocol.digest import sha256_file
from xwvm.protocol.vocab import ARTIFACT_ROLES

TEMPLATE_COLUMNS = ("uid", "name", "version", "status", "os", "arch", "signed", "disk",
                    "owner", "access_rights")
_ARCH = {"amd64": "x86_64", "arm64": "aarch64"}


format_option = format_option_factory(("table", "json"))


# --- resumable push state ----------------------------------------------------------------

class PushState:
    """Upload session ids of unfinished pushes, by server, sha256 and size."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or config_dir() / "uploads.json"

    def _load(self) -> dict[str, str]:
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    @staticmethod
    def key(server: str, sha256: str, size: int) -> str:
        return f"{server}|{sha256}|{size}"

    def get(self, key: str) -> str | None:
        return self._load().get(key)

    def put(self, key: str, uid: str | None) -> None:
        state = self._load()
        if uid is None:
            state.pop(key, None)
        else:
            state[key] = uid
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, self.path)


def upload_resumable(c: Client, path: Path, state: PushState | None = None,
                     progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Upload ``path`` (continuing an earlier session for the same content) and complete it."""
    state = state or PushState()
    size, sha = path.stat().st_size, sha256_file(path)
    key = PushState.key(c.server, sha, size)
    up = c.upload_file(path, sha256=sha, resume=state.get(key), progress=progress,
                       on_session=lambda uid: state.put(key, uid))
    return up


# --- reading what to push ------------------------------------------------------------------

def artifacts_from_build(out_dir: Path, disk_formats: tuple[str, ...]) -> tuple[
        dict[str, Any], list[tuple[Path, dict[str, Any]]]]:
    """Template fields and (file, artifact) pairs from a build's ``manifest.json``."""
    path = out_dir / "manifest.json"
    if not path.is_file():
        raise click.ClickException(f"{out_dir} has no manifest.json (is it the output folder "
                                   "of 'xwvm template build'?)")
    m = json.loads(path.read_text())
    os_info = m.get("os") or {}
    if isinstance(os_info, dict):
        os_name = "-".join(str(os_info[k]) for k in ("distribution", "release") if k in os_info)
        arch = str(os_info.get("arch", "x86_64"))
    else:
        os_name, arch = str(os_info), str(m.get("arch", "x86_64"))
    fields = {"name": m["name"], "version": str(m["version"]), "os": os_name or "linux",
              "arch": _ARCH.get(arch, arch), "cmdline": m.get("cmdline", ""),
              "min_memory_mb": int(m.get("min_memory_mb", 0)),
              "min_cpus": int(m.get("min_cpus", 0)),
              "shared_apps": list(m.get("shared_apps", [])), "spec": m.get("spec") or {},
              "description": m.get("description", "")}
    files = []
    for a in m["artifacts"]:
        if a["role"] not in ARTIFACT_ROLES:
            continue
        if a["role"] == "disk" and disk_formats and a["format"] not in disk_formats:
            continue
        files.append((out_dir / a["file"], {"role": a["role"], "format": a["format"],
                                            "virtual_size": a.get("virtual_size")}))
        if files[-1][0].stat().st_size != a["size"]:
            raise click.ClickException(f"{a['file']}: its size differs from manifest.json")
    return fields, files


def _guess_disk_format(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(80)
    if head[:4] == b"QFI\xfb":
        return "qcow2"
    if head[64:68] == b"\x7f\x10\xda\xbe":
        return "vdi"
    return {".vmdk": "vmdk", ".vdi": "vdi", ".qcow2": "qcow2"}.get(path.suffix, "raw")


# --- template commands --------------------------------------------------------------------

@template_group.command("push")
@click.argument("out_dir", required=False, type=click.Path(exists=True, file_okay=False,
                                                           path_type=Path))
@click.option("--disk", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="a disk image (instead of OUT_DIR)")
@click.option("--kernel", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--initrd", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name")
@click.option("--version", "version")
@click.option("--os", "os_name", default="linux", show_default=True)
@click.option("--arch", default="x86_64", show_default=True)
@click.option("--cmdline", default="", help="kernel command line (direct kernel boot)")
@click.option("--shared-app", "shared_apps", multiple=True, help="an app the image provides")
@click.option("--min-memory", "min_memory_mb", type=click.IntRange(min=0), default=0,
              help="MiB")
@click.option("--min-cpus", type=click.IntRange(min=0), default=0)
@click.option("--disk-format", "disk_formats", multiple=True,
              help="with OUT_DIR: push only these disk formats (default: all)")
@click.option("--access-rights", default="755", show_default=True)
@handle_errors
def template_push(out_dir: Path | None, disk: Path | None, kernel: Path | None,
                  initrd: Path | None, name: str | None, version: str | None, os_name: str,
                  arch: str, cmdline: str, shared_apps: tuple[str, ...], min_memory_mb: int,
                  min_cpus: int, disk_formats: tuple[str, ...], access_rights: str) -> None:
    """Upload a built template (OUT_DIR with manifest.json, or --disk/--kernel/--initrd
    with --name and --version) as a draft; re-running an interrupted push resumes it."""
    if out_dir is not None:
        fields, files = artifacts_from_build(out_dir, disk_formats)
        fields.update({k: v for k, v in (("name", name), ("version", version)) if v})
    else:
        if disk is None or not name or not version:
            raise click.UsageError("give OUT_DIR, or --disk with --name and --version")
        fields = {"name": name, "version": version, "os": os_name, "arch": arch,
                  "cmdline": cmdline, "min_memory_mb": min_memory_mb, "min_cpus": min_cpus,
                  "shared_apps": list(shared_apps)}
        files = [(disk, {"role": "disk", "format": _guess_disk_format(disk)})]
        files += [(p, {"role": r, "format": f}) for p, r, f in
                  ((kernel, "kernel", "linux-kernel"), (initrd, "initrd", "initrd")) if p]
    c = client()
    state = PushState()
    artifacts = []
    for path, art in files:
        with progress_bar(path.stat().st_size, f"push {path.name}") as cb:
            up = upload_resumable(c, path, state, cb)
        artifacts.append({**art, "upload": up["uid"]})
        click.echo(f"uploaded {path.name}: {up['size']} bytes sha256 {up['sha256']}",
                   err=True)
    t = c.create_template({**fields, "artifacts": artifacts, "access_rights": access_rights})
    for path, _ in files:
        state.put(PushState.key(c.server, sha256_file(path), path.stat().st_size), None)
    click.echo(f"pushed template {t['name']}:{t['version']} {t['uid']} (draft: sign it with "
               "'xwvm template sign', then 'xwvm template publish')")


@template_group.command("pull")
@click.argument("ref", callback=refs("template"))
@click.option("-o", "--output", "out_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path))
@click.option("--role", "roles", multiple=True, type=click.Choice(ARTIFACT_ROLES),
              help="only these artifacts (default: all)")
@click.option("--disk-format", "disk_formats", multiple=True)
@handle_errors
def template_pull(ref: str, out_dir: Path, roles: tuple[str, ...],
                  disk_formats: tuple[str, ...]) -> None:
    """Download REF's artifacts into OUT_DIR (resumable, each verified against its sha256)
    with template.json, its description."""
    c = client()
    t = c.get_template(ref)
    out_dir.mkdir(parents=True, exist_ok=True)
    for a in t["artifacts"]:
        if (roles and a["role"] not in roles) or (
                a["role"] == "disk" and disk_formats and a["format"] not in disk_formats):
            continue
        dest = out_dir / f"{a['role']}.{a['format']}"
        if dest.is_file() and dest.stat().st_size == a["size"] and \
                sha256_file(dest) == a["sha256"]:
            click.echo(f"{dest}: already there", err=True)
            continue
        with progress_bar(a["size"], f"pull {dest.name}") as cb:
            c.download(a["path"], dest, sha256=a["sha256"], progress=cb)
        click.echo(f"{dest}: {a['size']} bytes, sha256 verified", err=True)
    (out_dir / "template.json").write_text(json.dumps(t, indent=2, sort_keys=True) + "\n")
    click.echo(f"pulled {t['name']}:{t['version']} into {out_dir}")


def _row(t: dict[str, Any]) -> dict[str, Any]:
    disks = [f"{a['format']} {a['size']}" for a in t["artifacts"] if a["role"] == "disk"]
    return {**t, "disk": ", ".join(disks)}


@template_group.command("list")
@click.option("--name")
@click.option("--status", type=click.Choice(("draft", "published", "deprecated")))
@format_option_factory()
@handle_errors
def template_list(name: str | None, status: str | None, fmt: str) -> None:
    """Templates you may read."""
    c = client()
    rows = c.list_templates(name, status)
    output(rows if fmt == "json" else [_row(t) for t in rows], TEMPLATE_COLUMNS, fmt,
           "template", c)


@template_group.command("show")
@click.argument("ref", callback=refs("template"))
@format_option
@handle_errors
def template_show(ref: str, fmt: str) -> None:
    """One template (uid, NAME or NAME:VERSION), its artifacts and signatures."""
    c = client()
    t = c.get_template(ref)
    if fmt == "json":
        click.echo(json.dumps(t, indent=2, sort_keys=True))
        return
    [t] = with_names(c, [t], ("owner",))  # the owner's login, as in every table
    for key in ("uid", "name", "version", "status", "os", "arch", "cmdline", "min_memory_mb",
                "min_cpus", "shared_apps", "owner", "access_rights", "created_at",
                "published_at"):
        click.echo(f"{key + ':':15} {formats._cell(t.get(key))}")
    click.echo("artifacts:")
    for a in t["artifacts"]:
        click.echo(f"  {a['role']:7} {a['format']:12} {a['size']:>14}  {a['sha256']}")
    click.echo("signatures:" + ("" if t["signatures"] else " none (workers refuse it)"))
    for s in t["signatures"]:
        click.echo(f"  key {s['key_id']}")


@template_group.command("sign")
@click.argument("ref", callback=refs("template"))
@click.option("--key", "key_path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Ed25519 private key (PEM) from 'xwvm admin keygen'")
@handle_errors
def template_sign(ref: str, key_path: Path) -> None:
    """Sign REF's manifest (computed here, from what the server lists) and upload it."""
    c = client()
    t = c.get_template(ref)
    manifest = signing.canonical_manifest(t)
    if manifest != t["manifest"]:
        raise click.ClickException("the server's manifest differs from the one computed "
                                   "from its fields: refusing to sign")
    sig = signing.sign(manifest, signing.load_private(key_path))
    c.sign_template(t["uid"], sig.public_key, sig.signature)
    click.echo(f"signed {t['name']}:{t['version']} with key {sig.key_id}")


@template_group.command("publish")
@click.argument("ref", callback=refs("template"))
@handle_errors
def template_publish(ref: str) -> None:
    """Make REF available to job submissions."""
    t = client().publish_template(ref)
    for warning in t.get("warnings", []):
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"published {t['name']}:{t['version']} {t['uid']}")


@template_group.command("deprecate")
@click.argument("ref", callback=refs("template"))
@handle_errors
def template_deprecate(ref: str) -> None:
    """No new jobs may use REF; jobs already submitted finish."""
    t = client().deprecate_template(ref)
    click.echo(f"deprecated {t['name']}:{t['version']} {t['uid']}")


@template_group.command("rm")
@click.argument("names", nargs=-1, required=True, metavar="REF...",
                callback=refs("template"))
@handle_errors
def template_rm(names: tuple[str, ...]) -> None:
    """Remove templates (refused while unfinished jobs use one)."""
    c = client()
    for ref in names:
        c.delete_template(ref)
        click.echo(f"removed template {ref}")


# --- admin --------------------------------------------------------------------------------

@click.group("admin")
def admin_group() -> None:
    """Administration tools: 'keygen' works here and needs no server; 'issue-cert',
    'revoke-cert' and 'certs' ask the server you logged in to (super users only)."""


@admin_group.command("keygen")
@click.option("-o", "--output", "out_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path))
@handle_errors
def admin_keygen(out_dir: Path) -> None:
    """Write an Ed25519 template signing key pair into OUT_DIR and print its key id."""
    priv, pub, kid = signing.generate(out_dir)
    click.echo(f"private key: {priv} (keep it secret; mode 0600)", err=True)
    click.echo(f"public key:  {pub} (give it to workers: --trusted-key)", err=True)
    click.echo(kid)
