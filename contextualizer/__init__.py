"""Owns xwvm's VM contextualization: typed job contexts and NoCloud context ISOs.

Every VM job boots with a small ISO 9660 volume labelled ``CIDATA`` that turns a
generic template into this job's hardened VM. Stock cloud images read it with
cloud-init (``user-data``, ``meta-data``, ``network-config``); the xwvm
appliance reads ``xwvm/context.json`` (versioned by its ``format`` field).

Typical server/worker use::

    issues = validate_user_context(doc)            # at `xwvm context create`
    ctx = build_job_context(doc, JobSpec(...))     # when a worker takes the job
    write_iso(ctx, overlay_dir / "context.iso")    # attach as CD-ROM / DVD
    log.info("context %s", ctx.redacted())         # never log ctx itself

and in the guest, without cloud-init: ``read_iso("/dev/sr0")``.
"""

from contextualizer.errors import (
    ContextError,
    IsoReadError,
    UnsupportedFormatError,
    ValidationIssue,
)
from contextualizer.iso import build_iso, read_iso, write_iso
from contextualizer.job import JobSpec, build_job_context
from contextualizer.model import (
    DEFAULT_AGENT_COMMAND,
    FORMAT,
    SUPPORTED_FORMATS,
    GuestFile,
    InputRef,
    JobContext,
    Limits,
    Mode,
    NetworkPolicy,
    Payload,
    UserContext,
)
from contextualizer.validation import parse_user_context, validate_user_context

__all__ = [
    "DEFAULT_AGENT_COMMAND",
    "FORMAT",
    "SUPPORTED_FORMATS",
    "ContextError",
    "GuestFile",
    "InputRef",
    "IsoReadError",
    "JobContext",
    "JobSpec",
    "Limits",
    "Mode",
    "NetworkPolicy",
    "Payload",
    "UnsupportedFormatError",
    "UserContext",
    "ValidationIssue",
    "build_iso",
    "build_job_context",
    "parse_user_context",
    "read_iso",
    "validate_user_context",
    "write_iso",
]
