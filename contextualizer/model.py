"""Owns the typed job context and its one JSON codec (the ``xwvm/context.json`` document).

``JobContext`` is everything a VM needs to become one job's hardened, configured
VM. ``to_document``/``from_document`` are the only code that maps it to and from
the versioned JSON document; every other format (user-data, meta-data,
network-config) is rendered from the typed object by :mod:`contextualizer.seed`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from contextualizer.errors import IsoReadError, UnsupportedFormatError, ValidationIssue

#: The context document format this code writes.
FORMAT = 1
#: The context document formats this code can read. An older appliance that
#: meets a newer format refuses it instead of guessing.
SUPPORTED_FORMATS: frozenset[int] = frozenset({1})

#: The unprivileged account that receives the submitter's SSH keys and runs the payload.
GUEST_USER = "xwvm"
#: Where the staging command copies ``xwvm/context.json`` inside the guest.
GUEST_CONTEXT_PATH = "/run/xwvm/context.json"
#: The command cloud-init runs last to start the nested worker.
DEFAULT_AGENT_COMMAND: tuple[str, ...] = (
    "/opt/xwvm/bin/xwvm-agent",
    "--context",
    GUEST_CONTEXT_PATH,
)

REDACTED = "***redacted***"


class NetworkPolicy(StrEnum):
    """What the job's VM may reach: nothing, the server only, or the server and the internet."""

    NONE = "none"
    SERVER = "server"
    INTERNET = "internet"


class Mode(StrEnum):
    """``single`` runs one payload; ``pilot`` keeps pulling the owner's jobs of the shared app."""

    SINGLE = "single"
    PILOT = "pilot"


@dataclass(frozen=True)
class InputRef:
    """One input data object the nested worker downloads from the server."""

    uid: str
    name: str
    sha256: str


@dataclass(frozen=True)
class Payload:
    """What the nested worker runs: a command, its arguments, environment and inputs."""

    command: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    inputs: tuple[InputRef, ...] = ()


@dataclass(frozen=True)
class Limits:
    """Resource caps. ``idle_seconds`` only matters for pilots (stop after that long idle)."""

    wall_clock_seconds: int
    cpus: int
    memory_mb: int
    disk_mb: int
    idle_seconds: int | None = None


@dataclass(frozen=True)
class GuestFile:
    """A small user-supplied text file written into the guest (``mode`` is octal text)."""

    path: str
    content: str = field(repr=False)
    mode: str = "0644"


@dataclass(frozen=True)
class UserContext:
    """The user-supplied context data, after validation (see ``validate_user_context``)."""

    ssh_authorized_keys: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    network: NetworkPolicy = NetworkPolicy.SERVER
    hostname: str | None = None
    files: tuple[GuestFile, ...] = ()


@dataclass(frozen=True)
class JobContext:
    """The full context of one VM job: job-side data merged with the user's context.

    ``credential`` is a secret: it is kept out of ``repr`` and out of user-data,
    and only ever written to ``xwvm/context.json``. Log ``redacted()`` instead.
    """

    job_uid: str
    owner: str
    app: str
    mode: Mode
    server_url: str
    server_ca_pem: str
    credential: str = field(repr=False)
    payload: Payload
    limits: Limits
    network: NetworkPolicy = NetworkPolicy.SERVER
    hostname: str = "xwvm"
    ssh_authorized_keys: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    files: tuple[GuestFile, ...] = ()
    agent_command: tuple[str, ...] = DEFAULT_AGENT_COMMAND
    format: int = FORMAT

    def to_document(self) -> dict[str, Any]:
        """The ``xwvm/context.json`` document (plain JSON types, stable key order)."""
        return {
            "format": self.format,
            "job": {
                "uid": self.job_uid,
                "owner": self.owner,
                "app": self.app,
                "mode": self.mode.value,
            },
            "server": {"url": self.server_url, "ca_pem": self.server_ca_pem},
            "credential": self.credential,
            "payload": {
                "command": self.payload.command,
                "args": list(self.payload.args),
                "env": dict(sorted(self.payload.env.items())),
                "inputs": [
                    {"uid": i.uid, "name": i.name, "sha256": i.sha256} for i in self.payload.inputs
                ],
            },
            "limits": {
                "wall_clock_seconds": self.limits.wall_clock_seconds,
                "idle_seconds": self.limits.idle_seconds,
                "cpus": self.limits.cpus,
                "memory_mb": self.limits.memory_mb,
                "disk_mb": self.limits.disk_mb,
            },
            "network": self.network.value,
            "guest": {
                "hostname": self.hostname,
                "user": GUEST_USER,
                "ssh_authorized_keys": list(self.ssh_authorized_keys),
                "env": dict(sorted(self.env.items())),
                "files": [
                    {"path": f.path, "content": f.content, "mode": f.mode} for f in self.files
                ],
                "agent_command": list(self.agent_command),
            },
        }

    def redacted(self) -> dict[str, Any]:
        """The document with every secret replaced, safe to log.

        The credential, environment values (the user's and the payload's) and
        file contents are hidden; names, sizes and references stay visible.
        """
        doc = self.to_document()
        doc["credential"] = REDACTED
        doc["payload"]["env"] = {k: REDACTED for k in doc["payload"]["env"]}
        doc["guest"]["env"] = {k: REDACTED for k in doc["guest"]["env"]}
        doc["guest"]["files"] = [
            {**f, "content": f"<{len(f['content'].encode())} bytes>"} for f in doc["guest"]["files"]
        ]
        return doc

    @classmethod
    def from_document(cls, doc: Any) -> JobContext:
        """Parse a ``context.json`` document; raises ``IsoReadError`` naming every bad field.

        A ``format`` outside ``SUPPORTED_FORMATS`` raises ``UnsupportedFormatError``
        before anything else is looked at.
        """
        return _DocumentReader(doc).read()


class _DocumentReader:
    """Strict reader for the format-1 document: collects every issue, then fails once."""

    def __init__(self, doc: Any) -> None:
        self.doc = doc
        self.issues: list[ValidationIssue] = []

    def read(self) -> JobContext:
        if not isinstance(self.doc, dict):
            raise IsoReadError("context.json is not a JSON object")
        fmt = self.doc.get("format")
        if type(fmt) is not int or fmt not in SUPPORTED_FORMATS:
            raise UnsupportedFormatError(
                f"context.json has format {fmt!r}; this reader supports formats "
                f"{sorted(SUPPORTED_FORMATS)} (a newer xwvm wrote it: update the appliance)",
                [ValidationIssue("$.format", f"unsupported format {fmt!r}")],
            )
        d = self.doc
        self._keys(
            d,
            "$",
            {"format", "job", "server", "credential", "payload", "limits", "network", "guest"},
        )
        job = self._obj(d, "job", "$", {"uid", "owner", "app", "mode"})
        server = self._obj(d, "server", "$", {"url", "ca_pem"})
        payload = self._obj(d, "payload", "$", {"command", "args", "env", "inputs"})
        limits = self._obj(
            d, "limits", "$", {"wall_clock_seconds", "idle_seconds", "cpus", "memory_mb", "disk_mb"}
        )
        guest = self._obj(
            d,
            "guest",
            "$",
            {"hostname", "user", "ssh_authorized_keys", "env", "files", "agent_command"},
        )
        ctx = JobContext(
            job_uid=self._str(job, "uid", "$.job"),
            owner=self._str(job, "owner", "$.job"),
            app=self._str(job, "app", "$.job"),
            mode=self._enum(Mode, job, "mode", "$.job"),
            server_url=self._str(server, "url", "$.server"),
            server_ca_pem=self._str(server, "ca_pem", "$.server"),
            credential=self._str(d, "credential", "$"),
            payload=Payload(
                command=self._str(payload, "command", "$.payload"),
                args=tuple(self._strs(payload, "args", "$.payload")),
                env=self._str_map(payload, "env", "$.payload"),
                inputs=tuple(self._inputs(payload, "$.payload")),
            ),
            limits=Limits(
                wall_clock_seconds=self._int(limits, "wall_clock_seconds", "$.limits"),
                idle_seconds=self._int(limits, "idle_seconds", "$.limits", optional=True),
                cpus=self._int(limits, "cpus", "$.limits"),
                memory_mb=self._int(limits, "memory_mb", "$.limits"),
                disk_mb=self._int(limits, "disk_mb", "$.limits"),
            ),
            network=self._enum(NetworkPolicy, d, "network", "$"),
            hostname=self._str(guest, "hostname", "$.guest"),
            ssh_authorized_keys=tuple(self._strs(guest, "ssh_authorized_keys", "$.guest")),
            env=self._str_map(guest, "env", "$.guest"),
            files=tuple(self._files(guest, "$.guest")),
            agent_command=tuple(self._strs(guest, "agent_command", "$.guest")),
            format=fmt,
        )
        if guest.get("user", GUEST_USER) != GUEST_USER:
            self._bad("$.guest.user", f"must be {GUEST_USER!r}")
        if self.issues:
            raise IsoReadError("context.json is invalid", sorted(self.issues))
        return ctx

    def _bad(self, path: str, message: str) -> None:
        self.issues.append(ValidationIssue(path, message))

    def _keys(self, obj: dict[str, Any], path: str, allowed: set[str]) -> None:
        for key in sorted(set(obj) - allowed):
            self._bad(f"{path}.{key}", "unknown field")
        for key in sorted(allowed - set(obj)):
            if key != "idle_seconds":
                self._bad(f"{path}.{key}", "missing field")

    def _obj(self, parent: dict[str, Any], key: str, path: str, allowed: set[str]) -> dict:
        value = parent.get(key)
        if not isinstance(value, dict):
            if key in parent:
                self._bad(f"{path}.{key}", "must be an object")
            return {}
        self._keys(value, f"{path}.{key}", allowed)
        return value

    def _str(self, obj: dict[str, Any], key: str, path: str) -> str:
        value = obj.get(key, "")
        if not isinstance(value, str):
            self._bad(f"{path}.{key}", "must be a string")
            return ""
        return value

    def _int(self, obj: dict[str, Any], key: str, path: str, optional: bool = False) -> Any:
        value = obj.get(key)
        if value is None and optional:
            return None
        if type(value) is not int or value < 0:
            if key in obj:
                self._bad(f"{path}.{key}", "must be a non-negative integer")
            return 0
        return value

    def _enum(self, enum: type[StrEnum], obj: dict[str, Any], key: str, path: str) -> Any:
        try:
            return enum(obj.get(key))
        except ValueError:
            choices = ", ".join(m.value for m in enum)
            self._bad(f"{path}.{key}", f"must be one of: {choices}")
            return next(iter(enum))

    def _strs(self, obj: dict[str, Any], key: str, path: str) -> list[str]:
        value = obj.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self._bad(f"{path}.{key}", "must be a list of strings")
            return []
        return value

    def _str_map(self, obj: dict[str, Any], key: str, path: str) -> dict[str, str]:
        value = obj.get(key, {})
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            self._bad(f"{path}.{key}", "must be an object of strings")
            return {}
        return dict(value)

    def _inputs(self, obj: dict[str, Any], path: str) -> list[InputRef]:
        out = []
        for i, item in enumerate(obj.get("inputs", [])):
            where = f"{path}.inputs[{i}]"
            if not isinstance(item, dict):
                self._bad(where, "must be an object")
                continue
            self._keys(item, where, {"uid", "name", "sha256"})
            out.append(InputRef(*(self._str(item, k, where) for k in ("uid", "name", "sha256"))))
        return out

    def _files(self, obj: dict[str, Any], path: str) -> list[GuestFile]:
        out = []
        for i, item in enumerate(obj.get("files", [])):
            where = f"{path}.files[{i}]"
            if not isinstance(item, dict):
                self._bad(where, "must be an object")
                continue
            self._keys(item, where, {"path", "content", "mode"})
            out.append(GuestFile(*(self._str(item, k, where) for k in ("path", "content", "mode"))))
        return out
