"""Applications: native binaries per OS/arch, or shared apps provided by workers."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from xwvm.errors import BadRequest, Conflict, NotFound
from xwvm.server import events, policy
from xwvm.server.db.models import App, AppBinary, Data, Work
from xwvm.server.policy import Principal
from xwvm.server.rights import PUBLIC
from xwvm.server.services.common import get_or_404

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}\Z")
PLATFORM_RE = re.compile(r"^[a-z0-9_]+/[a-z0-9_]+\Z")


def find(db: Session, ref: str) -> App:
    """An app by id or by name."""
    app = db.scalars(select(App).where(App.name == ref)).first()
    if app is None and re.fullmatch(r"[0-9a-fA-F-]{36}", ref):
        app = db.get(App, ref.lower())
    if app is None:
        raise NotFound(f"no app named {ref!r}", code="unknown_app")
    return app


def create(db: Session, p: Principal, name: str, kind: str, binaries: dict[str, str],
           access_rights: int = PUBLIC) -> App:
    policy.require(p, "insert_app")
    if not NAME_RE.match(name):
        raise BadRequest(f"app name {name!r} must be 1-128 letters, digits or _.+-",
                         code="bad_name")
    if kind not in ("native", "shared"):
        raise BadRequest("app kind must be 'native' or 'shared'", code="bad_kind")
    if kind == "native" and not binaries:
        raise BadRequest("a native app needs at least one binary (os/arch → data id)",
                         code="no_binary")
    if kind == "shared" and binaries:
        raise BadRequest("a shared app has no binaries: workers provide it", code="bad_kind")
    if db.scalars(select(App).where(App.name == name)).first():
        raise Conflict(f"app {name!r} already exists", code="exists")
    app = App(name=name, kind=kind, owner_uid=p.uid, group_uid=p.group_uid,
              access_rights=access_rights)
    db.add(app)
    db.flush()
    for platform, data_uid in sorted(binaries.items()):
        if not PLATFORM_RE.match(platform):
            raise BadRequest(f"platform {platform!r} must look like linux/x86_64",
                             code="bad_platform")
        data = get_or_404(db, Data, data_uid, "data")
        policy.check(p, data, "r", "data")
        if data.status != "available":
            raise BadRequest(f"binary data {data_uid} for {platform} has no content yet",
                             code="data_pending")
        os_name, arch = platform.split("/")
        db.add(AppBinary(app_uid=app.uid, os=os_name, arch=arch, data_uid=data.uid))
    events.record(db, "app_created", object_uid=app.uid, actor_uid=p.uid,
                  detail=f"{name} ({kind})")
    return app


def binaries(db: Session, app_uid: str) -> dict[str, str]:
    rows = db.scalars(select(AppBinary).where(AppBinary.app_uid == app_uid)).all()
    return {f"{b.os}/{b.arch}": b.data_uid for b in rows}


def list_apps(db: Session, p: Principal) -> list[App]:
    policy.require(p, "list")
    return [a for a in db.scalars(select(App).order_by(App.name)) if policy.allows(p, a, "r")]


def delete(db: Session, p: Principal, ref: str) -> None:
    app = find(db, ref)
    policy.check_delete(p, app, "app")
    if db.scalars(select(Work.uid).where(Work.app_uid == app.uid).limit(1)).first():
        raise Conflict(f"app {app.name} is still referenced by jobs: remove them first",
                       code="in_use")
    db.delete(app)
    events.record(db, "app_deleted", object_uid=app.uid, actor_uid=p.uid, detail=app.name)
