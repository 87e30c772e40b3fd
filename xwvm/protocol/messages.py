"""The typed messages between server, worker and guest: a job description, a template
description and its artifacts' chunk manifests, host facts and hypervisor probes.

Each is a frozen dataclass with ``to_json()`` (the wire form, a plain JSON object) and
``from_json(doc)``, which checks every field's type and raises ValueError naming the field
(never its value). Keys a newer peer adds are ignored; a missing required key is an error.
Signed documents (a template's manifest and signatures, an app's signed description, a
context document) stay plain JSON: their bytes are what was signed or validated elsewhere.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from xwvm.protocol import fields as f
from xwvm.protocol.vocab import NetworkPolicy

_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}\Z")


@dataclass(frozen=True)
class InputFile:
    """One file a job needs: an input, its stdin or its app's binary (``role``)."""

    role: str     # "input" | "stdin" | "app"
    name: str     # where it goes in the job's directory (the app's platform for "app")
    data: str     # the data object's uid
    sha256: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"role": self.role, "name": self.name, "data": self.data,
                "sha256": self.sha256, "size": self.size}

    @classmethod
    def from_json(cls, doc: Any, where: str = "file") -> InputFile:
        d = f.document(doc, where)
        return cls(role=f.req(d, "role", str, where), name=f.req(d, "name", str, where),
                   data=f.req(d, "data", str, where), sha256=f.req(d, "sha256", str, where),
                   size=f.req(d, "size", int, where))


@dataclass(frozen=True)
class TemplateArtifact:
    """One artifact of a template (disk, kernel or initrd), where to fetch it and its
    content; chunk lists are at :func:`xwvm.protocol.paths.template_chunks`."""

    role: str
    format: str
    size: int
    sha256: str
    path: str
    virtual_size: int | None = None
    chunk_size: int | None = None
    chunk_count: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"role": self.role, "format": self.format, "size": self.size,
                "sha256": self.sha256, "virtual_size": self.virtual_size,
                "chunk_size": self.chunk_size, "chunk_count": self.chunk_count,
                "path": self.path}

    @classmethod
    def from_json(cls, doc: Any, where: str = "artifact") -> TemplateArtifact:
        d = f.document(doc, where)
        return cls(role=f.req(d, "role", str, where), format=f.req(d, "format", str, where),
                   size=f.req(d, "size", int, where), sha256=f.req(d, "sha256", str, where),
                   path=f.req(d, "path", str, where),
                   virtual_size=f.opt(d, "virtual_size", int, where),
                   chunk_size=f.opt(d, "chunk_size", int, where),
                   chunk_count=f.opt(d, "chunk_count", int, where, 0))


@dataclass(frozen=True)
class ChunkManifest:
    """An artifact's chunk list (:func:`xwvm.protocol.paths.template_chunks`): the sha256
    of each ``chunk_size``-byte piece, in order (the last may be shorter). It comes
    unsigned: the reader bounds ``chunk_size`` and checks the count against the artifact's
    signed size (:meth:`covers`). The artifact's own fields are optional (a cached copy
    carries only the chunking)."""

    chunk_size: int
    chunks: tuple[str, ...]
    role: str | None = None
    format: str | None = None
    size: int | None = None
    sha256: str | None = None

    def covers(self, size: object, max_chunk: int) -> bool:
        """Chunks of at most ``max_chunk`` bytes, exactly as many as ``size`` bytes need."""
        return (0 < self.chunk_size <= max_chunk and isinstance(size, int)
                and not isinstance(size, bool) and size >= 0
                and len(self.chunks) == -(-size // self.chunk_size))

    def to_json(self) -> dict[str, Any]:
        return {"role": self.role, "format": self.format, "size": self.size,
                "sha256": self.sha256, "chunk_size": self.chunk_size,
                "chunks": list(self.chunks)}

    @classmethod
    def from_json(cls, doc: Any, where: str = "chunks") -> ChunkManifest:
        d = f.document(doc, where)
        return cls(chunk_size=f.req(d, "chunk_size", int, where),
                   chunks=f.str_list(d, "chunks", where, required=True),
                   role=f.opt(d, "role", str, where), format=f.opt(d, "format", str, where),
                   size=f.opt(d, "size", int, where), sha256=f.opt(d, "sha256", str, where))


@dataclass(frozen=True)
class TemplateDescription:
    """A VM template as the server describes it (to users, and to the worker that boots
    it). ``manifest`` is the canonical text its ``signatures`` sign; the worker recomputes
    it from the other fields before it trusts any of them."""

    uid: str
    name: str
    version: str
    os: str
    arch: str
    manifest: str
    artifacts: tuple[TemplateArtifact, ...]
    cmdline: str = ""
    min_memory_mb: int = 0
    min_cpus: int = 0
    shared_apps: tuple[str, ...] = ()
    status: str = "published"
    signatures: tuple[dict[str, Any], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"uid": self.uid, "name": self.name, "version": self.version, "os": self.os,
                "arch": self.arch, "cmdline": self.cmdline,
                "min_memory_mb": self.min_memory_mb, "min_cpus": self.min_cpus,
                "shared_apps": list(self.shared_apps), "status": self.status,
                "artifacts": [a.to_json() for a in self.artifacts],
                "signatures": [dict(s) for s in self.signatures], "manifest": self.manifest}

    @classmethod
    def from_json(cls, doc: Any, where: str = "template") -> TemplateDescription:
        d = f.document(doc, where)
        return cls(uid=f.req(d, "uid", str, where), name=f.req(d, "name", str, where),
                   version=f.req(d, "version", str, where), os=f.req(d, "os", str, where),
                   arch=f.req(d, "arch", str, where),
                   manifest=f.req(d, "manifest", str, where),
                   artifacts=f.objects(d, "artifacts", where, TemplateArtifact.from_json,
                                       required=True),
                   cmdline=f.opt(d, "cmdline", str, where, ""),
                   min_memory_mb=f.opt(d, "min_memory_mb", int, where, 0),
                   min_cpus=f.opt(d, "min_cpus", int, where, 0),
                   shared_apps=f.str_list(d, "shared_apps", where),
                   status=f.opt(d, "status", str, where, "published"),
                   signatures=f.dicts(d, "signatures", where))


@dataclass(frozen=True)
class VMPart:
    """What a VM job's description adds: the template to boot, the network policy, the
    owner's context document and a credential delegated to the nested worker."""

    template: TemplateDescription
    owner: str
    delegated_token: str
    network: NetworkPolicy = NetworkPolicy.SERVER
    pilot: bool = False
    pilot_idle_s: int | None = None
    context: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"template": self.template.to_json(), "network": str(self.network),
                "pilot": self.pilot, "pilot_idle_s": self.pilot_idle_s, "owner": self.owner,
                "context": self.context, "delegated_token": self.delegated_token}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], where: str = "job") -> VMPart:
        return cls(template=TemplateDescription.from_json(doc.get("template"),
                                                          f"{where}.template"),
                   owner=f.req(doc, "owner", str, where),
                   delegated_token=f.req(doc, "delegated_token", str, where),
                   network=f.choice(doc, "network", where, NetworkPolicy,
                                    NetworkPolicy.SERVER),
                   pilot=f.opt(doc, "pilot", bool, where, False),
                   pilot_idle_s=f.opt(doc, "pilot_idle_s", int, where),
                   context=f.opt(doc, "context", dict, where))


@dataclass(frozen=True)
class SignedBinary:
    """One platform's binary of a native app, as its manifest signs it."""

    os: str
    arch: str
    sha256: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"os": self.os, "arch": self.arch, "sha256": self.sha256, "size": self.size}

    @classmethod
    def from_json(cls, doc: Any, where: str = "binary") -> SignedBinary:
        d = f.document(doc, where)
        return cls(os=f.req(d, "os", str, where), arch=f.req(d, "arch", str, where),
                   sha256=f.req(d, "sha256", str, where), size=f.req(d, "size", int, where))


@dataclass(frozen=True)
class SignedApp:
    """A native app as a worker checks it before running its binary: the fields its
    manifest signs (``to_json`` is what :func:`xwvm.signing.canonical_app_manifest`
    reads), the manifest as the server computed it, and the signatures over it."""

    uid: str
    name: str
    kind: str
    binaries: tuple[SignedBinary, ...] = ()
    manifest: str | None = None
    signatures: tuple[dict[str, Any], ...] = ()

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"uid": self.uid, "name": self.name, "kind": self.kind,
                               "binaries": [b.to_json() for b in self.binaries],
                               "signatures": [dict(s) for s in self.signatures]}
        if self.manifest is not None:
            doc["manifest"] = self.manifest
        return doc

    @classmethod
    def from_json(cls, doc: Any, where: str = "signed_app") -> SignedApp:
        d = f.document(doc, where)
        return cls(uid=f.req(d, "uid", str, where), name=f.req(d, "name", str, where),
                   kind=f.req(d, "kind", str, where),
                   binaries=f.objects(d, "binaries", where, SignedBinary.from_json),
                   manifest=f.opt(d, "manifest", str, where),
                   signatures=f.dicts(d, "signatures", where))


@dataclass(frozen=True)
class JobDescription:
    """The job the server sends a worker (and a pilot's nested worker): what to run, the
    files to fetch, the limits; ``vm`` for a VM job. On the wire it is one flat object
    (a VM job's ``app`` is its template's name)."""

    uid: str
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    files: tuple[InputFile, ...] = ()
    wall_clock_s: int | None = None
    min_memory_mb: int = 0
    min_cpus: int = 0
    min_disk_mb: int = 0
    listen_port: int | None = None
    app: str | None = None
    signed_app: SignedApp | None = None  # the app's signed description (native)
    command: str | None = None
    vm: VMPart | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "uid": self.uid, "args": list(self.args), "env": dict(self.env),
            "files": [x.to_json() for x in self.files], "wall_clock_s": self.wall_clock_s,
            "min_memory_mb": self.min_memory_mb, "min_cpus": self.min_cpus,
            "min_disk_mb": self.min_disk_mb, "listen_port": self.listen_port}
        signed = None if self.signed_app is None else self.signed_app.to_json()
        optional = {"app": self.app, "signed_app": signed,
                    "command": self.command}
        doc.update((k, v) for k, v in optional.items() if v is not None)
        if self.vm is not None:
            doc.update(self.vm.to_json(), command=self.command)
        return doc

    @classmethod
    def from_json(cls, doc: Any, where: str = "job") -> JobDescription:
        d = f.document(doc, where)
        return cls(uid=f.req(d, "uid", str, where), args=f.str_list(d, "args", where),
                   env=f.str_map(d, "env", where),
                   files=f.objects(d, "files", where, InputFile.from_json),
                   wall_clock_s=f.opt(d, "wall_clock_s", int, where),
                   min_memory_mb=f.opt(d, "min_memory_mb", int, where, 0),
                   min_cpus=f.opt(d, "min_cpus", int, where, 0),
                   min_disk_mb=f.opt(d, "min_disk_mb", int, where, 0),
                   listen_port=f.opt(d, "listen_port", int, where),
                   app=f.opt(d, "app", str, where),
                   signed_app=None if d.get("signed_app") is None
                   else SignedApp.from_json(d["signed_app"], f"{where}.signed_app"),
                   command=f.opt(d, "command", str, where),
                   vm=VMPart.from_json(d, where) if d.get("template") is not None else None)


@dataclass(frozen=True)
class VMCeilings:
    """The most any one VM on a host gets, set by the worker's owner, never by a job:
    memory (MiB), vCPUs, disk (MiB) and each vCPU's share of a host CPU (percent). The
    host record carries them (a probe's ``limits``) so that the scheduler sends no job
    that needs more; the worker refuses one anyway."""

    memory_mb: int
    cpus: int
    disk_mb: int
    cpu_percent: int = 100

    def to_json(self) -> dict[str, int]:
        return {"memory_mb": self.memory_mb, "cpus": self.cpus, "disk_mb": self.disk_mb,
                "cpu_percent": self.cpu_percent}

    @classmethod
    def from_json(cls, doc: Any, where: str = "limits") -> VMCeilings:
        d = f.document(doc, where)
        return cls(memory_mb=f.req(d, "memory_mb", int, where),
                   cpus=f.req(d, "cpus", int, where), disk_mb=f.req(d, "disk_mb", int, where),
                   cpu_percent=f.opt(d, "cpu_percent", int, where, 100))


def _networks(d: Mapping[str, Any], where: str) -> tuple[NetworkPolicy, ...] | None:
    """The policies a hypervisor enforces; names this side does not know are dropped (a
    newer worker's), since nothing here would send a job that asks for them."""
    if d.get("networks") is None:
        return None
    known = {str(p) for p in NetworkPolicy}
    return tuple(NetworkPolicy(n) for n in f.str_list(d, "networks", where) if n in known)


@dataclass(frozen=True)
class HypervisorProbe:
    """What one hypervisor's self-test found on a host (or, under the name ``native``,
    whether the host runs native jobs). The optional parts are present only when they
    apply: ``networks``, ``limits`` and ``template_keys`` (the ids of the keys whose
    template signatures its worker trusts) for a usable hypervisor, ``app_keys`` and
    ``unsigned_apps`` for the native entry."""

    usable: bool
    reason: str = ""
    accel: str | None = None  # "kvm" | "tcg" (libvirt), "hw" (VirtualBox)
    version: str = ""
    networks: tuple[NetworkPolicy, ...] | None = None
    limits: VMCeilings | None = None
    app_keys: tuple[str, ...] | None = None
    unsigned_apps: bool | None = None
    template_keys: tuple[str, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"usable": self.usable, "accel": self.accel,
                               "reason": self.reason, "version": self.version}
        if self.networks is not None:
            doc["networks"] = [str(n) for n in self.networks]
        if self.limits is not None:
            doc["limits"] = self.limits.to_json()
        if self.app_keys is not None:
            doc["app_keys"] = list(self.app_keys)
        if self.unsigned_apps is not None:
            doc["unsigned_apps"] = self.unsigned_apps
        if self.template_keys is not None:
            doc["template_keys"] = list(self.template_keys)
        return doc

    @classmethod
    def from_json(cls, doc: Any, where: str = "probe") -> HypervisorProbe:
        d = f.document(doc, where)
        limits = d.get("limits")
        return cls(usable=f.req(d, "usable", bool, where),
                   reason=f.opt(d, "reason", str, where, ""),
                   accel=f.opt(d, "accel", str, where),
                   version=f.opt(d, "version", str, where, ""),
                   networks=_networks(d, where),
                   limits=None if limits is None
                   else VMCeilings.from_json(limits, f"{where}.limits"),
                   app_keys=None if d.get("app_keys") is None
                   else f.str_list(d, "app_keys", where),
                   unsigned_apps=f.opt(d, "unsigned_apps", bool, where),
                   template_keys=None if d.get("template_keys") is None
                   else f.str_list(d, "template_keys", where))


def _probes(d: Mapping[str, Any], where: str) -> dict[str, HypervisorProbe]:
    found = f.opt(d, "hypervisors", dict, where, {})
    return {str(kind): HypervisorProbe.from_json(probe, f"{where}.hypervisors.{_label(kind)}")
            for kind, probe in found.items()}


def _label(key: str) -> str:
    """A key as an error names it: only when it looks like a name (it comes from a peer)."""
    return key if _NAME_RE.match(key) else "?"


@dataclass(frozen=True)
class HostFacts:
    """What a worker registers: the host's platform and size, the shared apps it
    provides, each hypervisor's probe (and ``native``), the templates in its image cache;
    ``uid`` when it registers again as a host it was before."""

    name: str
    os: str
    arch: str
    cpus: int
    memory_mb: int
    disk_mb: int
    shared_apps: tuple[str, ...] = ()
    hypervisors: dict[str, HypervisorProbe] = field(default_factory=dict)
    version: str = ""
    templates_held: tuple[str, ...] = ()
    uid: str | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "name": self.name, "os": self.os, "arch": self.arch, "cpus": self.cpus,
            "memory_mb": self.memory_mb, "disk_mb": self.disk_mb,
            "shared_apps": list(self.shared_apps),
            "hypervisors": {k: p.to_json() for k, p in self.hypervisors.items()},
            "version": self.version, "templates_held": list(self.templates_held)}
        if self.uid is not None:
            doc["uid"] = self.uid
        return doc

    @classmethod
    def from_json(cls, doc: Any, where: str = "host") -> HostFacts:
        d = f.document(doc, where)
        return cls(name=f.req(d, "name", str, where), os=f.req(d, "os", str, where),
                   arch=f.req(d, "arch", str, where), cpus=f.req(d, "cpus", int, where),
                   memory_mb=f.req(d, "memory_mb", int, where),
                   disk_mb=f.req(d, "disk_mb", int, where),
                   shared_apps=f.str_list(d, "shared_apps", where),
                   hypervisors=_probes(d, where),
                   version=f.opt(d, "version", str, where, ""),
                   templates_held=f.str_list(d, "templates_held", where),
                   uid=f.opt(d, "uid", str, where))
