"""`xwvm template build|validate|packer`: check template specs and build VM disk images offline.

``build`` needs root (mmdebstrap, chroot) and Debian's tools (mmdebstrap,
e2fsprogs, qemu-utils: scripts/install-system.sh installs them); it talks to
no xwvm server. Pushing the result to a server is a separate step.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from xwvm.client.imagebuild import BuildError, BuildOptions, SpecError, build, load_spec
from xwvm.client.imagebuild.image import ImageError
from xwvm.client.imagebuild.packer import packer_template
from xwvm.client.imagebuild.spec import validate_spec_file


class InvalidSpec(click.ClickException):
    """A spec with problems: one line per issue, each naming its field."""

    def __init__(self, source: str, issues: list[tuple[str, str]]) -> None:
        lines = [f"{source}: invalid template spec"]
        lines += [f"  {path}: {message}" for path, message in issues]
        super().__init__("\n".join(lines))


def _load(spec_path: Path):  # noqa: ANN202 - click helper
    try:
        return load_spec(spec_path)
    except SpecError as exc:
        raise InvalidSpec(str(spec_path), [(i.path, i.message) for i in exc.issues]) from None


@click.group("template")
def template_group() -> None:
    """VM disk templates: validate specs (templates/*.yaml) and build images."""


@template_group.command("validate")
@click.argument("specs", nargs=-1, required=True, type=click.Path(path_type=Path))
def template_validate(specs: tuple[Path, ...]) -> None:
    """Check SPECS against the template schema (after `extends`), listing every problem."""
    bad = 0
    for spec in specs:
        issues = validate_spec_file(spec)
        if issues:
            bad += 1
            click.echo(f"{spec}: invalid template spec", err=True)
            for issue in issues:
                click.echo(f"  {issue.path}: {issue.message}", err=True)
        else:
            click.echo(f"{spec}: ok")
    if bad:
        raise click.exceptions.Exit(1)


@template_group.command("build")
@click.argument("spec_path", metavar="SPEC", type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(path_type=Path),
              help="folder for manifest.json, disk.qcow2, disk.vdi, vmlinuz, initrd.img")
@click.option("--keep-raw", is_flag=True, help="keep disk.raw (the bare ext4 image) too")
@click.option("--cache", "cache_dir", type=click.Path(path_type=Path),
              help="keep downloaded .debs and wheels here for the next build")
@click.option("--apt-sources", "apt_sources", multiple=True,
              type=click.Path(exists=True, path_type=Path),
              help="apt sources file(s) to build from (default: this machine's Debian ones)")
def template_build(spec_path: Path, out_dir: Path, keep_raw: bool, cache_dir: Path | None,
                   apt_sources: tuple[Path, ...]) -> None:
    """Build SPEC into a VM disk image (raw ext4 -> qcow2 and VDI) with a manifest."""
    spec = _load(spec_path)
    if os.geteuid() != 0:
        raise click.ClickException("template build needs root (mmdebstrap --mode=root, chroot)")
    opts = BuildOptions(out_dir=out_dir, keep_raw=keep_raw, cache_dir=cache_dir,
                        apt_sources=list(apt_sources),
                        progress=lambda line: click.echo(line))
    try:
        manifest = build(spec, opts)
    except (BuildError, ImageError) as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"manifest: {out_dir / 'manifest.json'} (spec sha256 {manifest.spec_sha256})")


@template_group.command("packer")
@click.argument("spec_path", metavar="SPEC", type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="write the Packer JSON template here (default: standard output)")
def template_packer(spec_path: Path, output: Path | None) -> None:
    """Write a Packer 1.6 JSON template (qemu + virtualbox-iso builders) for SPEC."""
    text = json.dumps(packer_template(_load(spec_path)), indent=2) + "\n"
    if output:
        output.write_text(text)
        click.echo(f"wrote {output}")
    else:
        click.echo(text, nl=False)
