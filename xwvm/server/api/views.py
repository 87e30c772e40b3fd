"""JSON views of the server's objects (what the API returns)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from xwvm.server.db.models import (
    App,
    Context,
    Data,
    Event,
    Host,
    Template,
    User,
    UserGroup,
    Work,
)
from xwvm.server.rights import Level, format_mode


def _t(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def _owned(obj: Any, public_name: str) -> dict[str, Any]:
    return {"uid": obj.uid, "uri": f"xw://{public_name}/{obj.uid}", "owner": obj.owner_uid,
            "group": obj.group_uid, "access_rights": format_mode(obj.access_rights)}


def user(u: User, public_name: str) -> dict[str, Any]:
    return {**_owned(u, public_name), "login": u.login, "rights": Level(u.rights).label,
            "enabled": u.enabled, "confined_to_user": u.confine_user_uid,
            "confined_to_group": u.confine_group_uid, "created_at": _t(u.created_at)}


def group(g: UserGroup, public_name: str) -> dict[str, Any]:
    return {**_owned(g, public_name), "name": g.name, "created_at": _t(g.created_at)}


def data(d: Data, public_name: str) -> dict[str, Any]:
    return {**_owned(d, public_name), "name": d.name, "size": d.size, "sha256": d.sha256,
            "status": d.status, "created_at": _t(d.created_at)}


def app(a: App, binaries: dict[str, str], public_name: str) -> dict[str, Any]:
    return {**_owned(a, public_name), "name": a.name, "kind": a.kind, "binaries": binaries,
            "created_at": _t(a.created_at)}


def context(c: Context, public_name: str) -> dict[str, Any]:
    return {**_owned(c, public_name), "name": c.name, "document": c.document,
            "created_at": _t(c.created_at)}


def template(t: Template, public_name: str) -> dict[str, Any]:
    from xwvm.server.services.templates import describe
    return {**_owned(t, public_name), **describe(t).to_json(), "spec": t.spec,
            "description": t.description,
            "signed": bool(t.signatures), "created_at": _t(t.created_at),
            "published_at": _t(t.published_at)}


def work(w: Work, public_name: str) -> dict[str, Any]:
    return {**_owned(w, public_name), "app": w.app_uid, "template": w.template_uid,
            "command": w.command, "network": w.network,
            "nested_seen_at": _t(w.nested_seen_at), "pilot": w.pilot,
            "pilot_idle_s": w.pilot_idle_s, "pilot_uid": w.pilot_uid, "status": w.status,
            "args": w.args, "env": w.env, "label": w.label, "exit_code": w.exit_code,
            "error": w.error_message, "host": w.host_uid, "retries": w.retries,
            "max_retries": w.max_retries, "wall_clock_s": w.wall_clock_s,
            "min_memory_mb": w.min_memory_mb, "min_cpus": w.min_cpus,
            "min_disk_mb": w.min_disk_mb, "expected_host": w.expected_host_uid,
            "listen_port": w.listen_port, "result": w.result_data_uid, "context": w.context_uid,
            "submitted_at": _t(w.submitted_at), "started_at": _t(w.started_at),
            "completed_at": _t(w.completed_at)}


def host(h: Host, public_name: str) -> dict[str, Any]:
    return {**_owned(h, public_name), "name": h.name, "worker": h.worker_user_uid,
            "os": h.os, "arch": h.arch, "cpus": h.cpus,
            "memory_mb": h.memory_mb, "disk_mb": h.disk_mb, "shared_apps": h.shared_apps,
            "hypervisors": h.hypervisors, "version": h.version, "status": h.status,
            "alive_period": h.alive_period, "last_seen": _t(h.last_seen),
            "registered_at": _t(h.registered_at),
            "health": {"fault_streak": h.fault_streak or 0, "last_fault": h.last_fault,
                       "paused_until": _t(h.paused_until)}}


def event(e: Event) -> dict[str, Any]:
    return {"id": e.id, "at": _t(e.at), "kind": e.kind, "object": e.object_uid,
            "actor": e.actor_uid, "from": e.from_status, "to": e.to_status,
            "detail": e.detail}
