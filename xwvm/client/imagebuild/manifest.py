"""Owns ``manifest.json``: what a build produced, how to boot it, and how to verify it.

The manifest is what an admin pushes with the disk and what the libvirt and
VirtualBox drivers read: the artifacts (file, format, sizes, sha256), the
kernel command line for direct kernel boot, the shared apps and minimum
resources, the exact package list's digest and the build's own record.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from xwvm.protocol.digest import sha256_file

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1


@dataclass(frozen=True)
class Artifact:
    """One output file. ``virtual_size`` is the guest-visible size of a disk, else None."""

    file: str
    role: str  # disk | kernel | initrd | packages
    format: str  # qcow2 | vdi | vmdk | raw | linux-kernel | initramfs | text
    size: int
    sha256: str
    virtual_size: int | None = None


@dataclass
class Manifest:
    name: str
    version: str
    description: str
    spec_sha256: str
    spec: dict[str, Any]
    os: dict[str, str]
    cmdline: str
    root_label: str
    shared_apps: list[str]
    min_memory_mb: int
    min_cpus: int
    artifacts: list[Artifact]
    packages: dict[str, Any]
    versions: dict[str, Any]
    hardening: dict[str, Any]
    checks: list[dict[str, Any]]
    build: dict[str, Any]
    format: int = MANIFEST_FORMAT
    extra: dict[str, Any] = field(default_factory=dict)

    def artifact(self, role: str, fmt: str | None = None) -> Artifact:
        for a in self.artifacts:
            if a.role == role and (fmt is None or a.format == fmt):
                return a
        raise KeyError(f"no {role} artifact{f' in {fmt}' if fmt else ''} in the manifest")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("extra")
        out.update(self.extra)
        return out

    def write(self, out_dir: Path) -> Path:
        path = out_dir / MANIFEST_NAME
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, out_dir: Path) -> Manifest:
        raw = json.loads((out_dir / MANIFEST_NAME).read_text())
        known = set(cls.__dataclass_fields__) - {"extra", "artifacts"}
        return cls(artifacts=[Artifact(**a) for a in raw["artifacts"]],
                   extra={k: v for k, v in raw.items() if k not in known | {"artifacts"}},
                   **{k: v for k, v in raw.items() if k in known})


def describe(path: Path, role: str, fmt: str, virtual_size: int | None = None) -> Artifact:
    return Artifact(file=path.name, role=role, format=fmt, size=path.stat().st_size,
                    sha256=sha256_file(path), virtual_size=virtual_size)


def verify(out_dir: Path) -> list[str]:
    """Every artifact whose size or sha256 differs from the manifest; empty when all match."""
    manifest = Manifest.load(out_dir)
    problems = []
    for a in manifest.artifacts:
        path = out_dir / a.file
        if not path.is_file():
            problems.append(f"{a.file}: missing")
        elif path.stat().st_size != a.size:
            problems.append(f"{a.file}: {path.stat().st_size} bytes, manifest says {a.size}")
        elif sha256_file(path) != a.sha256:
            problems.append(f"{a.file}: sha256 differs from the manifest")
    return problems
