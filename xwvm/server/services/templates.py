"""VM disk templates: versioned, signed objects whose artifacts live in the image blob store.

A template is created (as a draft) from complete, verified uploads only, so a template
that exists always has all its bytes. Lifecycle: draft -> published -> deprecated (and
back to published). Jobs name a template by uid (or xw://SERVER/UID), ``name`` (latest
published version) or ``name:version``, names within the namespace the user trusts (own,
group, administrators'); the worker gets :func:`describe` (a protocol
TemplateDescription) in its job and verifies the signatures itself, with the keys it trusts.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from xwvm import signing
from xwvm.errors import BadRequest, Conflict, NotFound
from xwvm.protocol import paths
from xwvm.protocol.messages import TemplateArtifact, TemplateDescription
from xwvm.protocol.vocab import JobStatus
from xwvm.server import events, policy
from xwvm.server.blobs import BlobStore
from xwvm.server.db.models import Template, Work, utcnow
from xwvm.server.policy import Principal
from xwvm.server.rights import PUBLIC
from xwvm.server.services import uploads
from xwvm.server.services.common import check_name, id_in_ref, resolve_name, same_namespace

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}\Z")
# Jobs in these states still need their template: it cannot be removed under them.
USING_STATES = (JobStatus.PENDING, JobStatus.RUNNING, JobStatus.WAITING,
                JobStatus.DATAREQUEST, JobStatus.RESULTREQUEST)


def version_key(version: str) -> tuple[Any, ...]:
    """Natural order: 1.10 after 1.9, 2026.01.02 after 2025.12.31."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part)
                 for part in re.split(r"(\d+)", version) if part)


def create(db: Session, p: Principal, fields: dict[str, Any], *,
           access_rights: int = PUBLIC) -> Template:
    """A draft from ``fields`` (name, version, os, arch, artifacts [{role, format, upload,
    virtual_size}], cmdline, min_memory_mb, min_cpus, shared_apps, spec, description)."""
    policy.require(p, "insert_template")
    name, version = fields["name"], fields["version"]
    if not NAME_RE.match(name):
        raise BadRequest("template name: letters, digits, '.', '_', '-' (1-128)",
                         code="bad_name")
    check_name(name, "template")
    if not VERSION_RE.match(version):
        raise BadRequest("template version: letters, digits, '.', '_', '+', '-' (1-64)",
                         code="bad_version")
    if db.scalars(select(Template.uid).where(Template.name == name,
                                             Template.version == version,
                                             same_namespace(db, p, Template))
                  .limit(1)).first():
        raise Conflict("you already have a template of that name and version; push a new "
                       "version", code="template_exists")
    artifacts = []
    seen: set[tuple[str, str]] = set()
    for i, a in enumerate(fields["artifacts"]):  # role and format: checked by the API schema
        if (a["role"], a["format"]) in seen:
            raise BadRequest(f"artifacts[{i}]: a second {a['role']} in {a['format']}",
                             code="bad_artifact")
        seen.add((a["role"], a["format"]))
        up = uploads.consume(db, p, a["upload"])
        artifacts.append({"role": a["role"], "format": a["format"], "size": up.size,
                          "sha256": up.sha256, "virtual_size": a.get("virtual_size"),
                          "chunk_size": up.chunk_size, "chunks": up.chunks or []})
    if not any(a["role"] == "disk" for a in artifacts):
        raise BadRequest("a template needs a disk artifact", code="no_disk")
    t = Template(name=name, version=version, os=fields.get("os") or "linux",
                 arch=fields.get("arch") or "x86_64", artifacts=artifacts,
                 cmdline=fields.get("cmdline") or "",
                 min_memory_mb=fields.get("min_memory_mb") or 0,
                 min_cpus=fields.get("min_cpus") or 0,
                 shared_apps=list(fields.get("shared_apps") or []),
                 spec=fields.get("spec") or {}, description=fields.get("description") or "",
                 signatures=[], owner_uid=p.uid, group_uid=p.group_uid,
                 access_rights=access_rights)
    db.add(t)
    db.flush()
    events.record(db, "template_created", object_uid=t.uid, actor_uid=p.uid,
                  detail=f"{name}:{version}")
    return t


def _lookup(db: Session, p: Principal, ref: str, *, published_only: bool) -> Template:
    """By id (a uid or xw://SERVER/UID: that template only), or by ``name:version`` or
    ``name`` within the namespace ``p`` trusts (:func:`common.resolve_name`: one owner's
    versions, or the administrators'): ``name`` is its latest published version, or for
    the curious the latest readable one when none is published and drafts are allowed."""
    uid = id_in_ref(ref, "template")
    if uid is not None:
        t = db.get(Template, uid)
        if t is None:
            raise NotFound(f"no template with id {uid}", code="unknown_template")
        return t
    name, _, version = ref.partition(":")
    q = select(Template).where(Template.name == name)
    if version:
        q = q.where(Template.version == version)
    # Only templates ``p`` may read compete for the name: one it cannot see must neither
    # shadow nor make ambiguous one it can.
    rows = [t for t in db.scalars(q) if p.is_worker or policy.allows(p, t, "r")]
    if published_only and not version:
        rows = [t for t in rows if t.status == "published"]
    if not rows:
        what = "published template" if published_only and not version else "template"
        raise NotFound(f"no {what} of that name", code="unknown_template")
    rows = resolve_name(db, p, rows, "template")
    if not version:
        rows = [t for t in rows if t.status == "published"] or rows
    return max(rows, key=lambda t: (version_key(t.version), t.created_at))


def get(db: Session, uid: str) -> Template:
    """By uid, with no access check (for the server's own use, e.g. a job's template)."""
    t = db.get(Template, uid)
    if t is None:
        raise NotFound(f"no template with id {uid}", code="unknown_template")
    return t


def get_readable(db: Session, p: Principal, ref: str) -> Template:
    t = _lookup(db, p, ref, published_only=False)
    policy.check_template_read(db, p, t)
    return t


def list_templates(db: Session, p: Principal, name: str | None = None,
                   status: str | None = None) -> list[Template]:
    policy.require(p, "list")
    q = select(Template).order_by(Template.name, Template.created_at)
    if name:
        q = q.where(Template.name == name)
    if status:
        q = q.where(Template.status == status)
    rows = [t for t in db.scalars(q) if policy.allows(p, t, "r")]
    return sorted(rows, key=lambda t: (t.name, version_key(t.version)))


def find_for_submit(db: Session, p: Principal, ref: str) -> Template:
    """The template a new VM job boots: executable by ``p`` and published."""
    t = _lookup(db, p, ref, published_only=True)
    policy.check(p, t, "x", "template")
    if t.status != "published":
        hint = ("publish it first" if t.status == "draft"
                else "it was deprecated: use a newer version")
        raise Conflict(f"template {t.name}:{t.version} is {t.status}; {hint}",
                       code=f"template_{t.status}", details={"status": t.status})
    return t


def _artifact(a: dict[str, Any], uid: str) -> TemplateArtifact:
    return TemplateArtifact(role=a["role"], format=a["format"], size=a["size"],
                            sha256=a["sha256"], virtual_size=a.get("virtual_size"),
                            chunk_size=a.get("chunk_size"),
                            chunk_count=len(a.get("chunks") or []),
                            path=paths.template_artifact(uid, a["role"], a["format"]))


def manifest(t: Template) -> str:
    return signing.canonical_manifest({"name": t.name, "version": t.version, "os": t.os,
                                       "arch": t.arch, "artifacts": t.artifacts,
                                       "cmdline": t.cmdline, "shared_apps": t.shared_apps})


def describe(t: Template) -> TemplateDescription:
    """The template as users see it and as a worker needs it to fetch, verify and boot it
    (no chunk lists: those are at :func:`xwvm.protocol.paths.template_chunks`)."""
    return TemplateDescription(
        uid=t.uid, name=t.name, version=t.version, os=t.os, arch=t.arch, cmdline=t.cmdline,
        min_memory_mb=t.min_memory_mb, min_cpus=t.min_cpus,
        shared_apps=tuple(t.shared_apps), status=t.status,
        artifacts=tuple(_artifact(a, t.uid) for a in t.artifacts),
        signatures=tuple(dict(s) for s in t.signatures), manifest=manifest(t))


def artifact(t: Template, role: str, fmt: str | None) -> dict[str, Any]:
    found = [a for a in t.artifacts if a["role"] == role and fmt in (None, a["format"])]
    if not found:
        raise NotFound(f"template {t.name}:{t.version} has no {role}"
                       + (f" in {fmt}" if fmt else ""), code="unknown_artifact")
    if len(found) > 1:
        raise BadRequest(f"template {t.name}:{t.version} has its {role} in "
                         f"{', '.join(a['format'] for a in found)}: add ?format=",
                         code="ambiguous_artifact")
    return found[0]


def _writable(db: Session, p: Principal, ref: str) -> Template:
    policy.require(p, "insert_template")
    t = _lookup(db, p, ref, published_only=False)
    policy.check(p, t, "w", "template")
    return t


def add_signature(db: Session, p: Principal, ref: str, public_key_b64: str,
                  signature_b64: str) -> Template:
    """Store a signature after checking it against the manifest and the key sent with it."""
    t = _writable(db, p, ref)
    public = signing.public_from_b64(public_key_b64)
    if not signing.valid(manifest(t), public, signature_b64):
        raise BadRequest(f"the signature does not verify against template {t.name}:"
                         f"{t.version}'s manifest with that key", code="bad_signature")
    sig = {"key_id": signing.key_id(public), "public_key": public_key_b64,
           "signature": signature_b64}
    t.signatures = [s for s in t.signatures if s["key_id"] != sig["key_id"]] + [sig]
    events.record(db, "template_signed", object_uid=t.uid, actor_uid=p.uid,
                  detail=f"key {sig['key_id']}")
    return t


def publish(db: Session, p: Principal, ref: str) -> tuple[Template, list[str]]:
    """Publish (also undeprecate); the warnings say what workers will refuse."""
    t = _writable(db, p, ref)
    warnings = []
    if not t.signatures:
        warnings.append(f"template {t.name}:{t.version} is unsigned: workers refuse to boot "
                        "it until it has a signature by a key they trust "
                        "(xwvm template sign)")
    if t.status != "published":
        events.record(db, "template_published", object_uid=t.uid, actor_uid=p.uid,
                      from_status=t.status, to_status="published")
        t.status, t.published_at = "published", utcnow()
    return t, warnings


def deprecate(db: Session, p: Principal, ref: str) -> Template:
    """No new jobs may use it; jobs already submitted run to their end."""
    t = _writable(db, p, ref)
    if t.status == "draft":
        raise Conflict(f"template {t.name}:{t.version} is a draft; remove it instead",
                       code="template_draft")
    if t.status != "deprecated":
        events.record(db, "template_deprecated", object_uid=t.uid, actor_uid=p.uid,
                      from_status=t.status, to_status="deprecated")
        t.status = "deprecated"
    return t


def users_of(db: Session, uid: str) -> list[str]:
    q = (select(Work.uid).where(Work.template_uid == uid, Work.status.in_(USING_STATES))
         .order_by(Work.seq).limit(10))
    return list(db.scalars(q))


def delete(db: Session, store: BlobStore, p: Principal, ref: str) -> Template:
    t = _lookup(db, p, ref, published_only=False)
    policy.check_delete(p, t, "template")
    jobs = users_of(db, t.uid)
    if jobs:
        raise Conflict(f"template {t.name}:{t.version} is used by unfinished job(s) "
                       f"{', '.join(jobs)}: deprecate it and let them finish, or abort them",
                       code="in_use", details={"jobs": jobs})
    shas = {a["sha256"] for a in t.artifacts}
    db.delete(t)
    db.flush()
    for sha in shas:
        if not uploads.blob_referenced(db, sha):
            store.remove(sha)
    events.record(db, "template_deleted", object_uid=t.uid, actor_uid=p.uid,
                  detail=f"{t.name}:{t.version}")
    return t
