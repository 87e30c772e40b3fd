"""Owns the NoCloud documents as typed objects and their one YAML serializer.

``CloudConfig`` (user-data), ``MetaData`` and ``NetworkConfig`` only represent
the cloud-init formats; the hardening policy that fills them lives in
:mod:`contextualizer.seed`. YAML is always emitted with ``yaml.safe_dump`` from
plain dicts, never by string concatenation, so quoting is never our problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

Command = tuple[str, ...]


@dataclass(frozen=True)
class CloudUser:
    """One ``users`` entry. There is deliberately no ``sudo`` field: xwvm users never get one."""

    name: str
    ssh_authorized_keys: tuple[str, ...]
    gecos: str = ""
    shell: str = "/bin/sh"
    lock_passwd: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "gecos": self.gecos,
            "shell": self.shell,
            "lock_passwd": self.lock_passwd,
            "ssh_authorized_keys": list(self.ssh_authorized_keys),
        }


@dataclass(frozen=True)
class WriteFile:
    """One ``write_files`` entry, written after users exist (``defer``) so ``owner`` resolves."""

    path: str
    content: str
    permissions: str
    owner: str
    defer: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "content": self.content,
            "permissions": self.permissions,
            "owner": self.owner,
            "defer": self.defer,
        }


@dataclass(frozen=True)
class CloudConfig:
    """The ``#cloud-config`` user-data document (the subset xwvm uses)."""

    users: tuple[CloudUser, ...]
    disable_root: bool = True
    ssh_pwauth: bool = False
    ssh_deletekeys: bool = True
    write_files: tuple[WriteFile, ...] = ()
    runcmd: tuple[Command, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            # Listing users without "default" means the image's default
            # (sudo-capable) account is never created.
            "users": [u.to_dict() for u in self.users],
            "disable_root": self.disable_root,
            "ssh_pwauth": self.ssh_pwauth,
            "ssh_deletekeys": self.ssh_deletekeys,
        }
        if self.write_files:
            doc["write_files"] = [f.to_dict() for f in self.write_files]
        if self.runcmd:
            doc["runcmd"] = [list(c) for c in self.runcmd]
        return doc

    def render(self) -> bytes:
        return b"#cloud-config\n" + dump_yaml(self.to_dict())


@dataclass(frozen=True)
class MetaData:
    """NoCloud ``meta-data``: the instance id (the job UID) and the hostname."""

    instance_id: str
    local_hostname: str

    def to_dict(self) -> dict[str, Any]:
        return {"instance-id": self.instance_id, "local-hostname": self.local_hostname}

    def render(self) -> bytes:
        return dump_yaml(self.to_dict())


@dataclass(frozen=True)
class NetworkConfig:
    """Network config version 2: DHCPv4 on the first NIC, or no interface at all.

    The hardened VM has at most one NIC, so matching ``e*`` (eth0, ens3,
    enp1s0, ...) selects exactly the first one whatever the naming scheme.
    """

    dhcp: bool
    nic_match: str = "e*"

    def to_dict(self) -> dict[str, Any]:
        ethernets: dict[str, Any] = {}
        if self.dhcp:
            ethernets["nic0"] = {"match": {"name": self.nic_match}, "dhcp4": True}
        return {"version": 2, "ethernets": ethernets}

    def render(self) -> bytes:
        return dump_yaml(self.to_dict())


class _Dumper(yaml.SafeDumper):
    """``yaml.SafeDumper`` that writes multi-line strings (file contents) as literal blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def dump_yaml(data: dict[str, Any]) -> bytes:
    """The one YAML emitter: safe types only, block style, no wrapping (SSH keys stay whole)."""
    text = yaml.dump(
        data,
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=1 << 16,
    )
    return text.encode("utf-8")
