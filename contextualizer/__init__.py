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

The guest (the xwvm appliance, without cloud-init) carries only ``contextualizer.model``
and ``contextualizer.errors``: its init (``appliance/init``) mounts the context CD and
copies ``xwvm/context.json`` to ``/run/xwvm/context.json`` (``GUEST_CONTEXT_PATH``), and
the agent parses that copy with ``JobContext.from_document``. ``read_iso`` (pycdlib) is
for the host side: tests and tools that inspect a built ISO.
"""

from importlib import import_module
from typing import Any

# Where each public name lives. Imported on first use (PEP 562), so that the in-VM agent
# can read ``context.json`` with ``contextualizer.model`` alone, without pycdlib,
# jsonschema or cryptography installed in the guest.
_HOME = {
    "ContextError": "errors", "IsoReadError": "errors", "UnsupportedFormatError": "errors",
    "ValidationIssue": "errors",
    "build_iso": "iso", "read_iso": "iso", "write_iso": "iso",
    "JobSpec": "job", "build_job_context": "job",
    "DEFAULT_AGENT_COMMAND": "model", "FORMAT": "model", "SUPPORTED_FORMATS": "model",
    "GuestFile": "model", "InputRef": "model", "JobContext": "model", "Limits": "model",
    "Mode": "model", "NetworkPolicy": "model", "Payload": "model", "UserContext": "model",
    "parse_user_context": "validation", "validate_user_context": "validation",
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'contextualizer' has no attribute {name!r}")
    value = getattr(import_module(f"contextualizer.{_HOME[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


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
