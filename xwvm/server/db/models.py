"""The server's objects as SQLAlchemy models: the only persistent state of xwvm."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from xwvm.protocol.vocab import NetworkPolicy

UID = String(36)


def new_uid() -> str:
    return str(uuid.uuid4())


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Stores naive UTC (SQLite has no time zones) and always returns aware UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        return None if value is None else value.replace(tzinfo=dt.UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dt.datetime: UTCDateTime(), dict[str, Any]: JSON,
                           list[Any]: JSON}


class Owned:
    """Columns every access-controlled object carries."""

    owner_uid: Mapped[str] = mapped_column(UID, index=True)
    group_uid: Mapped[str | None] = mapped_column(UID, nullable=True)
    access_rights: Mapped[int] = mapped_column(Integer, default=0o755)


class Setting(Base):
    __tablename__ = "settings"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class UserGroup(Owned, Base):
    __tablename__ = "usergroups"
    uid: Mapped[str] = mapped_column(UID, primary_key=True, default=new_uid)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class User(Owned, Base):
    __tablename__ = "users"
    uid: Mapped[str] = mapped_column(UID, primary_key=True, default=new_uid)
    login: Mapped[str] = mapped_column(String(128), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(256), nullable=True)
    rights: Mapped[int] = mapped_column(Integer)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # When an admin removed the account (services/users.py remove_user): it stays, disabled
    # and unlisted, so that the objects, jobs and events naming its uid keep their history.
    removed_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    # A worker account is confined to the jobs of this user or group (None: public worker).
    confine_user_uid: Mapped[str | None] = mapped_column(UID, nullable=True)
    confine_group_uid: Mapped[str | None] = mapped_column(UID, nullable=True)
    # Fair share: owners are served in order of their last assignment.
    last_served_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Token(Base):
    __tablename__ = "tokens"
    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_uid: Mapped[str] = mapped_column(ForeignKey("users.uid", ondelete="CASCADE"),
                                          index=True)
    # A delegated token acts only for this VM job (its kind is in its signed payload).
    scope_work_uid: Mapped[str | None] = mapped_column(UID, nullable=True, index=True)
    expires_at: Mapped[dt.datetime] = mapped_column()
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    # A session opened with a certificate: its issuer (DN) and serial, so that revoking
    # the certificate ends the session.
    auth_issuer: Mapped[str | None] = mapped_column(String(512), nullable=True)
    auth_serial: Mapped[str | None] = mapped_column(String(48), nullable=True, index=True)


class LoginAttempt(Base):
    """A failed login, counted per key ("login:NAME" or "addr:IP") over a sliding window."""

    __tablename__ = "login_attempts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(192), index=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)


class AuthNonce(Base):
    """A single-use challenge (X.509 proof of possession, OIDC state) with a short life."""

    __tablename__ = "auth_nonces"
    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # x509 | oidc
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)
    used: Mapped[bool] = mapped_column(Boolean, default=False)


class ClientCert(Base):
    """A client certificate issued by the server CA; a revoked one is listed in its CRL."""

    __tablename__ = "client_certs"
    serial: Mapped[str] = mapped_column(String(48), primary_key=True)  # lower-case hex
    user_uid: Mapped[str] = mapped_column(ForeignKey("users.uid", ondelete="CASCADE"),
                                          index=True)
    subject: Mapped[str] = mapped_column(String(512))
    fingerprint: Mapped[str] = mapped_column(String(64))
    issued_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    not_after: Mapped[dt.datetime] = mapped_column()
    revoked_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)


class Identity(Base):
    """An outside identity (a grid CA's subject DN, an OIDC issuer's subject) of a user."""

    __tablename__ = "identities"
    provider: Mapped[str] = mapped_column(String(255), primary_key=True)  # x509 | OIDC issuer
    # x509: the DN of the CA that signed the certificate (a name is that CA's, not any
    # CA's); "?" for rows made before it was recorded; "" for OIDC (the provider is).
    issuer: Mapped[str] = mapped_column(String(512), primary_key=True, default="")
    subject: Mapped[str] = mapped_column(String(512), primary_key=True)
    user_uid: Mapped[str] = mapped_column(ForeignKey("users.uid", ondelete="CASCADE"),
                                          index=True)


class Data(Owned, Base):
    __tablename__ = "data"
    uid: Mapped[str] = mapped_column(UID, primary_key=True, default=new_uid)
    name: Mapped[str] = mapped_column(String(255))
    size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | available
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class App(Owned, Base):
    __tablename__ = "apps"
    uid: Mapped[str] = mapped_column(UID, primary_key=True, default=new_uid)
    name: Mapped[str] = mapped_column(String(128))
    # "native": binaries per os/arch; "shared": provided by workers that share it (e.g. root).
    kind: Mapped[str] = mapped_column(String(16), default="native")
    # [{key_id, public_key (base64 raw Ed25519), signature (base64)}] over the app's
    # manifest (xwvm.signing.canonical_app_manifest): workers run only what a key they
    # trust signed.
    signatures: Mapped[list[Any]] = mapped_column(default=list)
    # Counts the changes of its binaries (1 as created): each replaced, added or removed
    # binary makes a new version, whose manifest is signed anew.
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    # Names are unique per owner: a name resolves within the namespaces a user trusts
    # (services/common.py: resolve_name), so nobody can squat one for everybody.
    __table_args__ = (UniqueConstraint("owner_uid", "name", name="uq_apps_owner_name"),)


class AppBinary(Base):
    __tablename__ = "app_binaries"
    app_uid: Mapped[str] = mapped_column(ForeignKey("apps.uid", ondelete="CASCADE"),
                                         primary_key=True)
    os: Mapped[str] = mapped_column(String(32), primary_key=True)
    arch: Mapped[str] = mapped_column(String(32), primary_key=True)
    data_uid: Mapped[str] = mapped_column(ForeignKey("data.uid"))


class AppSigner(Base):
    """A key that signed an app's manifest (its id): the scheduler sends a native app's
    jobs only to workers that trust one of them."""

    __tablename__ = "app_signers"
    app_uid: Mapped[str] = mapped_column(ForeignKey("apps.uid", ondelete="CASCADE"),
                                         primary_key=True)
    key_id: Mapped[str] = mapped_column(String(64), primary_key=True)


class Host(Owned, Base):
    """A worker's machine. Owned by the user who enrolled its worker account, in the group
    that account is confined to; its access rights decide who sees it (755 by default)."""

    __tablename__ = "hosts"
    uid: Mapped[str] = mapped_column(UID, primary_key=True, default=new_uid)
    name: Mapped[str] = mapped_column(String(255))
    worker_user_uid: Mapped[str] = mapped_column(ForeignKey("users.uid"), index=True)
    os: Mapped[str] = mapped_column(String(32))
    arch: Mapped[str] = mapped_column(String(32))
    cpus: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(Integer)
    disk_mb: Mapped[int] = mapped_column(BigInteger)
    shared_apps: Mapped[list[Any]] = mapped_column(default=list)
    hypervisors: Mapped[dict[str, Any]] = mapped_column(default=dict)
    version: Mapped[str] = mapped_column(String(32), default="")
    # alive | stopped (said goodbye) | lost (fell silent) | gone (removed)
    status: Mapped[str] = mapped_column(String(16), default="alive")
    # Template uids whose images this host has cached: the scheduler prefers their jobs.
    templates_held: Mapped[list[Any]] = mapped_column(default=list)
    # Its health (scheduler/health.py): infrastructure faults in a row, the last one, and
    # until when it gets no job (its circuit breaker is open).
    fault_streak: Mapped[int] = mapped_column(Integer, default=0)
    last_fault: Mapped[str | None] = mapped_column(Text, nullable=True)
    paused_until: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    alive_period: Mapped[int] = mapped_column(Integer)
    registered_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_seen: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Work(Owned, Base):
    __tablename__ = "works"
    # seq orders jobs by submission (a UUID does not).
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    uid: Mapped[str] = mapped_column(UID, unique=True, default=new_uid)
    # A native job names an app; a VM job names a template and a shell command instead.
    # No foreign key: a final job keeps the uid of an app removed since (its history).
    app_uid: Mapped[str | None] = mapped_column(UID, nullable=True)
    template_uid: Mapped[str | None] = mapped_column(UID, nullable=True, index=True)
    command: Mapped[str | None] = mapped_column(Text, nullable=True)
    network: Mapped[str] = mapped_column(String(16), default=str(NetworkPolicy.SERVER))
    nested_seen_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    # A pilot VM job keeps pulling its owner's jobs of the template's shared app; each job
    # it runs points back to it.
    pilot: Mapped[bool] = mapped_column(Boolean, default=False)
    pilot_idle_s: Mapped[int | None] = mapped_column(Integer, nullable=True)
    pilot_uid: Mapped[str | None] = mapped_column(UID, nullable=True, index=True)
    status: Mapped[str] = mapped_column(String(16))
    args: Mapped[list[Any]] = mapped_column(default=list)
    env: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result_data_uid: Mapped[str | None] = mapped_column(UID, nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    host_uid: Mapped[str | None] = mapped_column(UID, nullable=True, index=True)
    retries: Mapped[int] = mapped_column(Integer, default=0)
    max_retries: Mapped[int] = mapped_column(Integer, default=10)
    wall_clock_s: Mapped[int | None] = mapped_column(Integer, nullable=True)
    min_memory_mb: Mapped[int] = mapped_column(Integer, default=0)
    min_cpus: Mapped[int] = mapped_column(Integer, default=0)
    min_disk_mb: Mapped[int] = mapped_column(BigInteger, default=0)
    expected_host_uid: Mapped[str | None] = mapped_column(UID, nullable=True)
    listen_port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    label: Mapped[str | None] = mapped_column(String(255), nullable=True)
    context_uid: Mapped[str | None] = mapped_column(UID, nullable=True, index=True)
    submitted_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    completed_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)

    __table_args__ = (Index("ix_works_status_seq", "status", "seq"),
                      Index("ix_works_owner_status_seq", "owner_uid", "status", "seq"))


class Context(Owned, Base):
    """A user's reusable VM context document (keys, env, network...), JSON-Schema validated."""

    __tablename__ = "contexts"
    uid: Mapped[str] = mapped_column(UID, primary_key=True, default=new_uid)
    name: Mapped[str] = mapped_column(String(255))
    document: Mapped[dict[str, Any]] = mapped_column()
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class WorkData(Base):
    """The data a job reads (app binary, inputs, stdin): what its worker may download."""

    __tablename__ = "work_data"
    work_uid: Mapped[str] = mapped_column(ForeignKey("works.uid", ondelete="CASCADE"),
                                          primary_key=True)
    data_uid: Mapped[str] = mapped_column(ForeignKey("data.uid"), primary_key=True,
                                          index=True)
    role: Mapped[str] = mapped_column(String(16))  # app | input | stdin
    name: Mapped[str] = mapped_column(String(255))


class Event(Base):
    """Append-only log of every state move and every refused request."""

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    object_uid: Mapped[str | None] = mapped_column(UID, nullable=True, index=True)
    actor_uid: Mapped[str | None] = mapped_column(UID, nullable=True)
    from_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    to_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)


class Maintenance(Base):
    """Claims for periodic sweeps so that one server process runs each at a time."""

    __tablename__ = "maintenance"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    last_run: Mapped[dt.datetime] = mapped_column()


class Template(Owned, Base):
    """A versioned VM disk template: artifacts in the image blob store, signed manifest.

    ``artifacts`` is a list of {role, format, size, sha256, virtual_size, chunk_size,
    chunks}: ``chunks`` is the sha256 of each fixed-size piece (incremental updates)."""

    __tablename__ = "templates"
    uid: Mapped[str] = mapped_column(UID, primary_key=True, default=new_uid)
    name: Mapped[str] = mapped_column(String(128), index=True)
    version: Mapped[str] = mapped_column(String(64))
    os: Mapped[str] = mapped_column(String(64), default="linux")
    arch: Mapped[str] = mapped_column(String(32), default="x86_64")
    artifacts: Mapped[list[Any]] = mapped_column(default=list)
    cmdline: Mapped[str] = mapped_column(Text, default="")
    min_memory_mb: Mapped[int] = mapped_column(Integer, default=0)
    min_cpus: Mapped[int] = mapped_column(Integer, default=0)
    shared_apps: Mapped[list[Any]] = mapped_column(default=list)
    status: Mapped[str] = mapped_column(String(16), default="draft")  # draft|published|deprecated
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)
    description: Mapped[str] = mapped_column(Text, default="")
    # [{key_id, public_key (base64 raw Ed25519), signature (base64)}] over the manifest.
    signatures: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    published_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)

    __table_args__ = (UniqueConstraint("owner_uid", "name", "version",
                                       name="uq_templates_owner_name_version"),)


class UploadSession(Base):
    """A resumable upload: state here, bytes in the blob store's part file (no process memory)."""

    __tablename__ = "upload_sessions"
    uid: Mapped[str] = mapped_column(UID, primary_key=True, default=new_uid)
    owner_uid: Mapped[str] = mapped_column(UID, index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    received: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[str] = mapped_column(String(16), default="open")  # open | complete
    chunk_size: Mapped[int] = mapped_column(Integer)
    chunks: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)


__all__ = [
    "App", "AppBinary", "AuthNonce", "Base", "ClientCert", "Context", "Data", "Event", "Host",
    "Identity", "LoginAttempt", "Maintenance", "Setting", "Template", "Token", "UploadSession",
    "User", "UserGroup", "Work", "WorkData", "new_uid", "utcnow",
]
