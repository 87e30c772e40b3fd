"""Owns template specs: loading ``templates/*.yaml``, resolving ``extends``, validation, typing.

A spec is checked against ``template-schema.json`` (this package's data) after its parents are
merged in, so a child only writes what it changes. Every problem comes back as
a ``ValidationIssue`` (JSON path, message), in the contextualizer's style;
``load_spec`` raises ``SpecError`` carrying all of them at once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from contextualizer.errors import ValidationIssue
from contextualizer.schema_errors import Wording, json_path, schema_issues
from xwvm.client.imagebuild import sources
from xwvm.errors import XwvmError
from xwvm.protocol.hardening import FORBIDDEN_PACKAGES  # would give the user a way to root

ROOT_LABEL = "xwvm-root"
MAX_EXTENDS_DEPTH = 8


class SpecError(XwvmError):
    """A template spec that cannot be built; ``issues`` lists every problem with its path."""

    status, code = 400, "invalid_template_spec"

    def __init__(self, message: str, issues: list[ValidationIssue] | None = None) -> None:
        self.issues = list(issues or [])
        detail = "; ".join(str(i) for i in self.issues)
        super().__init__(f"{message}: {detail}" if detail else message,
                         details=[{"path": i.path, "message": i.message} for i in self.issues])


@dataclass(frozen=True)
class FileCopy:
    source: Path
    dest: str


@dataclass(frozen=True)
class Check:
    name: str
    command: tuple[str, ...]


@dataclass(frozen=True)
class TemplateSpec:
    """A merged, validated spec. ``document`` is the merged mapping the manifest records."""

    name: str
    version: str
    description: str
    release: str
    variant: str
    arch: str
    size_mb: int
    formats: tuple[str, ...]
    kernel_package: str
    cmdline: str
    initramfs_modules: tuple[str, ...]
    initramfs: str  # "initramfs-tools" (Debian's) | "xwvm" (imagebuild/initramfs.py)
    packages: tuple[str, ...]
    pip_target: str | None
    pip_packages: tuple[str, ...]
    python_packages: tuple[str, ...]
    files: tuple[FileCopy, ...]
    user: str
    allow_su: bool
    checks: tuple[Check, ...]
    shared_apps: tuple[str, ...]
    min_memory_mb: int
    min_cpus: int
    path: Path
    document: dict[str, Any] = field(repr=False)

    @property
    def sha256(self) -> str:
        """Digest of the merged spec as canonical JSON: equal for equal specs."""
        return spec_digest(self.document)

    @property
    def all_packages(self) -> tuple[str, ...]:
        return (self.kernel_package, *self.packages)


def spec_digest(document: dict[str, Any]) -> str:
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@cache
def template_schema() -> dict[str, Any]:
    """The spec JSON Schema (draft 2020-12), checked once when first loaded."""
    schema = json.loads(sources.schema_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


def load_spec(path: str | Path) -> TemplateSpec:
    """Read, merge and validate the spec at ``path``; raises ``SpecError`` with every issue."""
    path = Path(path)
    document, issues = resolve_document(path)
    if not issues:
        issues = validate_document(document)
    if issues:
        raise SpecError(f"{path}: invalid template spec", issues)
    return _typed(document, path)


def validate_spec_file(path: str | Path) -> list[ValidationIssue]:
    """Every problem in the spec at ``path`` (after ``extends``); empty when it is valid."""
    document, issues = resolve_document(Path(path))
    return issues or validate_document(document)


def resolve_document(path: Path, _seen: tuple[Path, ...] = ()) -> tuple[dict[str, Any],
                                                                        list[ValidationIssue]]:
    """The spec at ``path`` merged onto its ``extends`` chain (parents in the same folder)."""
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        return {}, [ValidationIssue("$", f"cannot read {path}: {exc.strerror or exc}")]
    except yaml.YAMLError as exc:
        return {}, [ValidationIssue("$", f"is not valid YAML: {exc}")]
    if not isinstance(doc, dict):
        return {}, [ValidationIssue("$", "must be a mapping of fields")]
    parent_name = doc.get("extends")
    if parent_name is None:
        return doc, []
    if not isinstance(parent_name, str) or not parent_name.replace("-", "").isalnum():
        return doc, [ValidationIssue("$.extends", "must be the name of a spec in the same folder")]
    parent_path = path.parent / f"{parent_name}.yaml"
    if parent_path.resolve() in _seen or len(_seen) >= MAX_EXTENDS_DEPTH:
        return doc, [ValidationIssue("$.extends", f"{parent_name!r} extends itself (a cycle)")]
    if not parent_path.is_file():
        return doc, [ValidationIssue("$.extends", f"no spec {parent_path.name} beside this one")]
    parent, issues = resolve_document(parent_path, (*_seen, path.resolve()))
    if issues:
        return doc, [ValidationIssue(i.path, f"in {parent_path.name}: {i.message}")
                     for i in issues]
    merged = merge(parent, doc)
    merged["extends"] = parent_name
    return merged, []


def merge(parent: Any, child: Any) -> Any:
    """Child onto parent: mappings merge key by key, lists concatenate without
    duplicates (parent's items first), anything else the child replaces."""
    if isinstance(parent, dict) and isinstance(child, dict):
        out = dict(parent)
        for key, value in child.items():
            out[key] = merge(parent[key], value) if key in parent else value
        return out
    if isinstance(parent, list) and isinstance(child, list):
        out_list = list(parent)
        for item in child:
            if item not in out_list:
                out_list.append(item)
        return out_list
    return child


def validate_document(doc: Any) -> list[ValidationIssue]:
    """Schema issues plus the checks a schema cannot say, sorted by path."""
    issues = set(_schema_issues(doc))
    if isinstance(doc, dict):
        issues.update(_semantic_issues(doc))
    return sorted(issues)


_TYPE_NAMES = {"string": "a string", "integer": "an integer", "array": "a list",
               "object": "a mapping", "boolean": "true or false"}
_WORDING = Wording().with_rules(
    type=lambda e: f"must be {_TYPE_NAMES.get(str(e.validator_value), e.validator_value)}")


def _schema_issues(doc: Any) -> Iterator[ValidationIssue]:
    validator = jsonschema.Draft202012Validator(template_schema())
    return schema_issues(validator.iter_errors(doc), _WORDING, _special)


_PATTERN_MEANING = {
    "debian_package": "is not a Debian package name (lower-case letters, digits, + - . ; "
                      "optionally =VERSION)",
    "pip_requirement": "is not a pip requirement (NAME, NAME[extra], NAME==VERSION, ...)",
    "guest_path": "is not an absolute path in the image (no '.' or '..' segments)",
    "source_path": "is not a relative path in the source tree (no '.' or '..' segments)",
    "identifier": "is not a name (lower-case letter first, then letters, digits, _ or -)",
}


def _special(error: jsonschema.ValidationError) -> ValidationIssue | None:
    """What a spec's rule means, where the rule alone would not say (named patterns, the
    hardening that cannot be turned off); None: the wording's message."""
    kind, path = str(error.validator), list(error.absolute_path)
    ref = _defined_as(error) if kind in ("pattern", "not") else None
    message = None
    if ref is not None and ref in _PATTERN_MEANING:
        message = _PATTERN_MEANING[ref]
    elif kind == "const" and path and path[0] == "hardening":
        message = f"must be {json.dumps(error.validator_value)}: the guest hardening of " \
                  "the security model cannot be turned off"
    elif kind == "not" and path == ["hardening", "user"]:
        message = "must not be a system account"
    return None if message is None else ValidationIssue(json_path(path), message)


def _defined_as(error: jsonschema.ValidationError) -> str | None:
    """The ``$defs`` entry whose rule failed, if the failing subschema is one of them."""
    for name, definition in template_schema()["$defs"].items():
        if error.schema == definition:
            return name
    return None


def _semantic_issues(doc: dict[str, Any]) -> Iterator[ValidationIssue]:
    packages = doc.get("packages")
    if isinstance(packages, list):
        for i, pkg in enumerate(packages):
            if isinstance(pkg, str) and pkg.split("=", 1)[0] in FORBIDDEN_PACKAGES:
                yield ValidationIssue(json_path(["packages", i]),
                                      "would let the unprivileged user become root (no sudo "
                                      "in a guest)")
    kernel = doc.get("kernel")
    if isinstance(kernel, dict) and isinstance(kernel.get("cmdline"), str):
        words = kernel["cmdline"].split()
        for needed in (f"root=LABEL={ROOT_LABEL}", "init=/opt/xwvm/init", "console=ttyS0"):
            if needed not in words:
                yield ValidationIssue("$.kernel.cmdline", f"must contain {needed}")
    files = doc.get("files")
    if isinstance(files, list):
        for i, item in enumerate(files):
            source = item.get("source") if isinstance(item, dict) else None
            try:
                if isinstance(source, str):
                    sources.files_source(source)
            except sources.SourceError as e:
                yield ValidationIssue(json_path(["files", i, "source"]), str(e))
    checks = doc.get("checks")
    if isinstance(checks, list):
        names = [c.get("name") for c in checks if isinstance(c, dict)]
        for i, name in enumerate(names):
            if name in names[:i]:
                yield ValidationIssue(json_path(["checks", i, "name"]), "is given twice")


def _typed(doc: dict[str, Any], path: Path) -> TemplateSpec:
    pip = doc.get("pip") or {}
    hardening = doc["hardening"]
    return TemplateSpec(
        name=doc["name"],
        version=doc["version"],
        description=doc.get("description", ""),
        release=doc["os"]["release"],
        variant=doc["os"].get("variant", "minbase"),
        arch=doc["os"]["arch"],
        size_mb=doc["disk"]["size_mb"],
        formats=tuple(doc["disk"].get("formats", ["qcow2", "vdi"])),
        kernel_package=doc["kernel"]["package"],
        cmdline=doc["kernel"]["cmdline"],
        initramfs_modules=tuple(doc["kernel"].get("initramfs_modules", ())),
        initramfs=doc["kernel"].get("initramfs", "initramfs-tools"),
        packages=tuple(doc["packages"]),
        pip_target=pip.get("target"),
        pip_packages=tuple(pip.get("packages", ())),
        python_packages=tuple(doc.get("python_packages", ())),
        files=tuple(FileCopy(sources.import_root() / f["source"], f["dest"])
                    for f in doc.get("files", ())),
        user=hardening["user"],
        allow_su=hardening.get("su", False),
        checks=tuple(Check(c["name"], tuple(c["command"])) for c in doc.get("checks", ())),
        shared_apps=tuple(doc.get("shared_apps", ())),
        min_memory_mb=doc.get("min_memory_mb", 256),
        min_cpus=doc.get("min_cpus", 1),
        path=path,
        document=doc,
    )
