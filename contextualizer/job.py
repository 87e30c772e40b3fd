"""Owns the merge of a user's context data with the job-side data into one ``JobContext``.

The server (or worker) knows the job: its UID, owner, the shared app, the
payload, the limits, and the delegated credential. The user supplied the rest
(keys, environment, network wish, hostname, files). ``build_job_context``
validates the user part (raising ``ContextError`` on user mistakes) and checks
the job part (raising ``ValueError``: those are programming errors).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from contextualizer.model import (
    DEFAULT_AGENT_COMMAND,
    JobContext,
    Limits,
    Mode,
    NetworkPolicy,
    Payload,
    UserContext,
)
from contextualizer.validation import parse_user_context

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_UID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


@dataclass(frozen=True)
class JobSpec:
    """The job-side half of a context, as the server or worker knows it.

    ``network``, when set, overrides the user's choice (the job's own policy,
    e.g. chosen at submission, wins over the reusable context object).
    """

    job_uid: str
    owner: str
    app: str
    server_url: str
    server_ca_pem: str
    credential: str = field(repr=False)
    payload: Payload
    limits: Limits
    mode: Mode = Mode.SINGLE
    network: NetworkPolicy | None = None
    agent_command: tuple[str, ...] = DEFAULT_AGENT_COMMAND


def build_job_context(user_ctx: dict[str, Any] | UserContext, job: JobSpec) -> JobContext:
    """Merge validated user context data with ``job`` into the full ``JobContext``.

    ``user_ctx`` is the raw document (validated here) or an already parsed
    ``UserContext``.
    """
    user = user_ctx if isinstance(user_ctx, UserContext) else parse_user_context(user_ctx)
    check_job(job)
    return JobContext(
        job_uid=job.job_uid,
        owner=job.owner,
        app=job.app,
        mode=Mode(job.mode),
        server_url=job.server_url,
        server_ca_pem=job.server_ca_pem,
        credential=job.credential,
        payload=job.payload,
        limits=job.limits,
        network=NetworkPolicy(job.network or user.network),
        hostname=user.hostname or default_hostname(job.job_uid),
        ssh_authorized_keys=user.ssh_authorized_keys,
        env=dict(user.env),
        files=user.files,
        agent_command=tuple(job.agent_command),
    )


def default_hostname(job_uid: str) -> str:
    """``xwvm-`` plus the job UID reduced to an RFC 1123 label."""
    tail = re.sub(r"[^a-z0-9-]+", "-", job_uid.lower())
    return f"xwvm-{tail}"[:63].strip("-")


def check_job(job: JobSpec) -> None:
    """Raise ``ValueError`` listing every problem in the job-side data."""
    problems = []
    if not _UID.match(job.job_uid):
        problems.append(f"job_uid {job.job_uid!r} is not a valid UID")
    for name in ("owner", "app", "credential", "server_ca_pem"):
        if not getattr(job, name):
            problems.append(f"{name} is empty")
    if not job.server_url.startswith(("https://", "http://")):
        problems.append("server_url must be an http(s) URL")
    if job.mode not in tuple(Mode):
        problems.append(f"mode must be one of {[m.value for m in Mode]}")
    if not job.payload.command and job.mode == Mode.SINGLE:
        problems.append("payload.command is empty")
    for ref in job.payload.inputs:
        if not _SHA256.match(ref.sha256):
            problems.append(f"input {ref.uid!r} has no valid sha256")
    lim = job.limits
    if min(lim.wall_clock_seconds, lim.cpus, lim.memory_mb, lim.disk_mb) <= 0:
        problems.append("limits must be positive")
    if job.mode == Mode.PILOT and not (lim.idle_seconds and lim.idle_seconds > 0):
        problems.append("a pilot needs limits.idle_seconds > 0")
    if not job.agent_command:
        problems.append("agent_command is empty")
    if problems:
        raise ValueError("invalid job data: " + "; ".join(problems))
