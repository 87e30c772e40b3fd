"""Which pending jobs a given host may run: the matching rules as SQL conditions."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, exists, or_, select

from xwvm.server.db.models import App, AppBinary, Host, Work
from xwvm.server.policy import Principal

GROUP_READ, OTHER_READ = 0o040, 0o004


def confinement(worker: Principal) -> Any:
    """A worker enrolled by a user runs that user's jobs; one tied to a project (usergroup)
    runs that group's jobs that the group may read; a public worker runs public jobs."""
    if worker.confine_user_uid:
        return Work.owner_uid == worker.confine_user_uid
    if worker.confine_group_uid:
        return and_(Work.group_uid == worker.confine_group_uid,
                    Work.access_rights.op("&")(GROUP_READ) != 0)
    return Work.access_rights.op("&")(OTHER_READ) != 0


def app_available(host: Host) -> Any:
    """A native binary for the host's OS/arch, or an app the host shares (e.g. ``root``)."""
    native = exists(select(AppBinary.app_uid).where(
        AppBinary.app_uid == Work.app_uid, AppBinary.os == host.os,
        AppBinary.arch == host.arch))
    shared = list(host.shared_apps or [])
    if not shared:
        return native
    return or_(native, exists(select(App.uid).where(
        App.uid == Work.app_uid, App.kind == "shared", App.name.in_(shared))))


def runnable(host: Host) -> Any:
    """Native jobs need their app here; VM jobs need a usable hypervisor here."""
    native = and_(Work.template_uid.is_(None), app_available(host))
    if not host.vm_capable:
        return native
    return or_(native, Work.template_uid.is_not(None))


def conditions(host: Host, worker: Principal) -> list[Any]:
    return [
        Work.min_memory_mb <= host.memory_mb,
        Work.min_cpus <= host.cpus,
        Work.min_disk_mb <= host.disk_mb,
        or_(Work.expected_host_uid.is_(None), Work.expected_host_uid == host.uid),
        confinement(worker),
        runnable(host),
    ]
