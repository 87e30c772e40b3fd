"""Owns the typed job context and its one JSON codec (the ``xwvm/context.json`` document).

``JobContext`` is everything a VM needs to become one job's hardened, configured
VM. ``to_document``/``from_document`` are the only code that maps it to and from
the versioned JSON document; every other format (user-data, meta-data,
network-config) is rendered from the typed object by :mod:`contextualizer.seed`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from contextualizer.errors import IsoReadError, UnsupportedFormatError, ValidationIssue
from xwvm.protocol.vocab import NetworkPolicy, StrEnum

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
        return {"format": self.format, **_dump(DOCUMENT, self)}

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


# --- the document's field tables: one per object, driving both to_document and the reader --


@dataclass(frozen=True)
class Kind:
    """How one field is written to JSON (``dump``) and read back (``load`` returns the value
    or ``_BAD`` with the rule broken)."""

    dump: Callable[[Any], Any]
    load: Callable[[Any], Any]
    rule: str


_BAD = object()


def _checked(ok: Callable[[Any], bool],
             convert: Callable[[Any], Any] = lambda v: v) -> Callable[[Any], Any]:
    return lambda v: convert(v) if ok(v) else _BAD


STR = Kind(str, _checked(lambda v: isinstance(v, str)), "must be a string")
INT = Kind(int, _checked(lambda v: type(v) is int and v >= 0),
           "must be a non-negative integer")
OPTIONAL_INT = Kind(lambda v: v, _checked(lambda v: v is None or (type(v) is int and v >= 0)),
                    "must be a non-negative integer")
STRS = Kind(list, _checked(lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
                           tuple), "must be a list of strings")
STR_MAP = Kind(lambda v: dict(sorted(v.items())),
               _checked(lambda v: isinstance(v, dict)
                        and all(isinstance(x, str) for x in v.values()), dict),
               "must be an object of strings")


def enum_kind(enum: type[StrEnum]) -> Kind:
    values = {m.value for m in enum}
    return Kind(lambda v: v.value, _checked(lambda v: v in values, enum),
                f"must be one of: {', '.join(m.value for m in enum)}")


@dataclass(frozen=True)
class Field:
    """One JSON key of an object, bound to one attribute (``None``: a constant, ``value``)."""

    key: str
    attr: str | None
    kind: Kind | None = None
    table: tuple[Field, ...] = ()  # a nested object (``cls`` set) or a list of them (``many``)
    cls: type | None = None
    many: bool = False
    required: bool = True
    value: Any = None


def _obj(key: str, attr: str | None, table: tuple[Field, ...], cls: type | None = None,
         many: bool = False) -> Field:
    return Field(key, attr, table=table, cls=cls, many=many)


INPUT = (Field("uid", "uid", STR), Field("name", "name", STR), Field("sha256", "sha256", STR))
FILE = (Field("path", "path", STR), Field("content", "content", STR),
        Field("mode", "mode", STR))
PAYLOAD = (Field("command", "command", STR), Field("args", "args", STRS),
           Field("env", "env", STR_MAP), _obj("inputs", "inputs", INPUT, InputRef, many=True))
LIMITS = (Field("wall_clock_seconds", "wall_clock_seconds", INT),
          Field("idle_seconds", "idle_seconds", OPTIONAL_INT, required=False),
          Field("cpus", "cpus", INT), Field("memory_mb", "memory_mb", INT),
          Field("disk_mb", "disk_mb", INT))
#: The whole document but its ``format``: ``job``, ``server`` and ``guest`` hold fields of
#: the JobContext itself (no ``cls``); ``payload`` and ``limits`` are objects of their own.
DOCUMENT = (
    _obj("job", None, (Field("uid", "job_uid", STR), Field("owner", "owner", STR),
                       Field("app", "app", STR), Field("mode", "mode", enum_kind(Mode)))),
    _obj("server", None, (Field("url", "server_url", STR),
                          Field("ca_pem", "server_ca_pem", STR))),
    Field("credential", "credential", STR),
    _obj("payload", "payload", PAYLOAD, Payload),
    _obj("limits", "limits", LIMITS, Limits),
    Field("network", "network", enum_kind(NetworkPolicy)),
    _obj("guest", None, (
        Field("hostname", "hostname", STR),
        Field("user", None, value=GUEST_USER),
        Field("ssh_authorized_keys", "ssh_authorized_keys", STRS),
        Field("env", "env", STR_MAP),
        _obj("files", "files", FILE, GuestFile, many=True),
        Field("agent_command", "agent_command", STRS),
    )),
)


def _dump(table: tuple[Field, ...], obj: Any) -> dict[str, Any]:
    return {f.key: _dump_field(f, obj) for f in table}


def _dump_field(f: Field, obj: Any) -> Any:
    if f.attr is None and not f.table:
        return f.value
    value = obj if f.attr is None else getattr(obj, f.attr)
    if f.many:
        return [_dump(f.table, item) for item in value]
    if f.table:
        return _dump(f.table, value)
    assert f.kind is not None
    return f.kind.dump(value)


class _DocumentReader:
    """Strict reader for the format-1 document, driven by ``DOCUMENT``: collects every
    issue, then fails once."""

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
        rest = {k: v for k, v in self.doc.items() if k != "format"}
        values = self._object(rest, "$", DOCUMENT)
        if self.issues:
            raise IsoReadError("context.json is invalid", sorted(self.issues))
        return JobContext(format=fmt, **values)

    def _bad(self, path: str, message: str) -> None:
        self.issues.append(ValidationIssue(path, message))

    def _object(self, obj: dict[str, Any], path: str, table: tuple[Field, ...]) -> dict:
        """The constructor arguments ``table`` reads from ``obj`` (flattened for fields of
        a section without its own class)."""
        known = {f.key for f in table}
        for key in sorted(set(obj) - known):
            self._bad(f"{path}.{key}", "unknown field")
        values: dict[str, Any] = {}
        for f in table:
            if f.key not in obj:
                if f.required:
                    self._bad(f"{path}.{f.key}", "missing field")
                continue
            value = self._field(f, obj[f.key], f"{path}.{f.key}")
            if f.attr is None and f.table:
                values.update(value)
            elif f.attr is not None and value is not _BAD:
                values[f.attr] = value
        return values

    def _field(self, f: Field, value: Any, path: str) -> Any:
        if f.many:
            return self._list(f, value, path)
        if f.table:
            if not isinstance(value, dict):
                self._bad(path, "must be an object")
                return {} if f.cls is None else _BAD
            values = self._object(value, path, f.table)
            return values if f.cls is None else _build(f.cls, values)
        if f.kind is None:  # a constant
            if value != f.value:
                self._bad(path, f"must be {f.value!r}")
            return _BAD
        loaded = f.kind.load(value)
        if loaded is _BAD:
            self._bad(path, f.kind.rule)
        return loaded

    def _list(self, f: Field, value: Any, path: str) -> Any:
        if not isinstance(value, list):
            self._bad(path, "must be a list")
            return _BAD
        items = []
        for i, item in enumerate(value):
            one = self._field(replace(f, many=False), item, f"{path}[{i}]")
            if one is not _BAD:
                items.append(one)
        return tuple(items)


def _build(cls: type, values: dict[str, Any]) -> Any:
    """An instance of ``cls``, or ``_BAD`` when an issue left a field out (then the
    reader raises anyway)."""
    try:
        return cls(**values)
    except TypeError:
        return _BAD
