"""Owns the NoCloud seed: which files a context ISO holds, the hardening policy in user-data.

``render_seed`` turns a ``JobContext`` into the file set (path -> bytes) and
``parse_seed`` turns such a file set back into a ``JobContext``. The ISO layer
(:mod:`contextualizer.iso`) only packs and unpacks these files.

Secrets: the credential and the environment live only in ``xwvm/context.json``.
cloud-init stores and may log user-data, so user-data carries nothing secret;
the guest copies ``context.json`` off the CD into a root-only file at boot.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import yaml

from contextualizer.cloudconfig import CloudConfig, CloudUser, MetaData, NetworkConfig, WriteFile
from contextualizer.errors import IsoReadError, ValidationIssue
from contextualizer.model import GUEST_CONTEXT_PATH, GUEST_USER, JobContext, NetworkPolicy
from xwvm.protocol.hardening import FORBIDDEN_PACKAGES, SETUID_STRIPPED

USER_DATA = "user-data"
META_DATA = "meta-data"
NETWORK_CONFIG = "network-config"
CONTEXT_JSON = "xwvm/context.json"
#: Files cloud-init requires on a NoCloud volume, plus ours.
REQUIRED_FILES = (META_DATA, USER_DATA, CONTEXT_JSON)

#: The volume label cloud-init's NoCloud datasource looks for (case-insensitively).
VOLUME_LABEL = "CIDATA"

# Each entry is one runcmd argv. No privilege tool for anybody (the one list, in
# xwvm.protocol.hardening): drop sudoers drop-ins, purge every tool's packages where the
# package manager allows it, and strip the setuid bit of whatever privilege program remains.
_PURGE = "; ".join(f"dpkg --purge {pkg} >/dev/null 2>&1 || rpm -e {pkg} >/dev/null 2>&1 || true"
                   for pkg in FORBIDDEN_PACKAGES)
_STRIP = " ".join(f"/{prog}" for prog in SETUID_STRIPPED)
HARDENING_COMMANDS: tuple[tuple[str, ...], ...] = (
    ("sh", "-c", "rm -rf /etc/sudoers.d/* && passwd -l root >/dev/null 2>&1 || true"),
    ("sh", "-c", _PURGE),
    ("sh", "-c", f'for b in {_STRIP}; do if [ -e "$b" ]; then chmod u-s,g-s "$b"; fi; done'),
)


def stage_context_command(label: str = VOLUME_LABEL, target: str = GUEST_CONTEXT_PATH) -> tuple:
    """The runcmd that copies ``xwvm/context.json`` off the context CD into a root-only file."""
    script = (
        'set -e; umask 077; d=$(dirname "$1"); mkdir -p "$d/cidata"; '
        'dev=$(blkid -L "$2" || blkid -L "$(echo "$2" | tr A-Z a-z)"); '
        'mount -o ro "$dev" "$d/cidata"; cp "$d/cidata/xwvm/context.json" "$1"; '
        'umount "$d/cidata"; rmdir "$d/cidata"'
    )
    return ("sh", "-c", script, "stage-context", target, label)


def user_data(ctx: JobContext) -> CloudConfig:
    """The hardened cloud-config for a job: one locked, key-only, sudo-less user, then the agent."""
    user = CloudUser(
        name=GUEST_USER,
        gecos="xwvm job user",
        ssh_authorized_keys=tuple(ctx.ssh_authorized_keys),
        lock_passwd=True,
    )
    files = tuple(
        WriteFile(
            path=f.path,
            content=f.content,
            permissions=f.mode,
            owner=f"{GUEST_USER}:{GUEST_USER}" if f.path.startswith("/home/") else "root:root",
        )
        for f in ctx.files
    )
    runcmd = (*HARDENING_COMMANDS, stage_context_command(), tuple(ctx.agent_command))
    return CloudConfig(users=(user,), write_files=files, runcmd=runcmd)


def meta_data(ctx: JobContext) -> MetaData:
    return MetaData(instance_id=ctx.job_uid, local_hostname=ctx.hostname)


def network_config(ctx: JobContext) -> NetworkConfig:
    return NetworkConfig(dhcp=ctx.network is not NetworkPolicy.NONE)


def context_json(ctx: JobContext) -> bytes:
    """Canonical JSON: sorted keys, fixed separators, trailing newline (byte-stable)."""
    text = json.dumps(ctx.to_document(), sort_keys=True, indent=1, ensure_ascii=False)
    return (text + "\n").encode("utf-8")


def render_seed(ctx: JobContext) -> dict[str, bytes]:
    """All files of the context volume, by path (``/``-separated, no leading slash)."""
    return {
        META_DATA: meta_data(ctx).render(),
        USER_DATA: user_data(ctx).render(),
        NETWORK_CONFIG: network_config(ctx).render(),
        CONTEXT_JSON: context_json(ctx),
    }


def parse_seed(files: Mapping[str, bytes]) -> JobContext:
    """Rebuild the ``JobContext`` from a seed file set, refusing incomplete or inconsistent ones."""
    missing = [name for name in REQUIRED_FILES if name not in files]
    if missing:
        raise IsoReadError(
            "context volume is incomplete",
            [ValidationIssue(f"/{name}", "missing") for name in missing],
        )
    user = files[USER_DATA]
    if not user.startswith(b"#cloud-config\n") or not isinstance(_yaml(user, USER_DATA), dict):
        raise IsoReadError("user-data is not a #cloud-config document")
    meta = _yaml(files[META_DATA], META_DATA)
    if not isinstance(meta, dict) or not meta.get("instance-id"):
        raise IsoReadError("meta-data has no instance-id", [ValidationIssue("/meta-data", "bad")])
    try:
        doc = json.loads(files[CONTEXT_JSON].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IsoReadError(f"{CONTEXT_JSON} is not valid JSON: {exc}") from exc
    ctx = JobContext.from_document(doc)
    if str(meta["instance-id"]) != ctx.job_uid:
        raise IsoReadError(
            "meta-data and context.json disagree",
            [ValidationIssue("/meta-data.instance-id", f"is not the job UID {ctx.job_uid!r}")],
        )
    return ctx


def _yaml(data: bytes, name: str) -> object:
    try:
        return yaml.safe_load(data.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise IsoReadError(f"{name} is not valid YAML: {exc}") from exc
