"""Applications: native binaries per OS/arch, or shared apps provided by workers; an app
named by id is that app, by name the one the user trusts (services/common.py).

A native app's binaries run on volunteers' machines, so an admin signs its manifest
(uid, name, kind, and each binary's os, arch, sha256 and size: xwvm.signing) with an
offline key; the server checks a signature before storing it and sends the signatures
with each job, and the worker runs only what a key it trusts signed (worker/apps.py).
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from xwvm import signing
from xwvm.errors import BadRequest, Conflict
from xwvm.protocol import platforms
from xwvm.server import events, policy, states
from xwvm.server.db.models import App, AppBinary, AppSigner, Data, Work, WorkData
from xwvm.server.policy import Principal
from xwvm.server.rights import PUBLIC
from xwvm.server.services.common import (
    check_name,
    get_or_404,
    id_in_ref,
    resolve_name,
    same_namespace,
)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}\Z")
def check_platform(platform: str) -> tuple[str, str]:
    """(os, arch) of ``os/arch`` as workers report them; a 400 naming the accepted values
    otherwise (the protocol's vocabulary: the client checks the same before uploading)."""
    try:
        return platforms.check_platform(platform)
    except platforms.UnknownPlatform as e:
        raise BadRequest(str(e), code="bad_platform",
                         details={"os": list(platforms.KNOWN_OS),
                                  "arch": list(platforms.KNOWN_ARCH)}) from None


def get(db: Session, uid: str) -> App:
    """By uid, with no access check (for the server's own use, e.g. a job's app)."""
    return get_or_404(db, App, uid, "app")


def find(db: Session, p: Principal, ref: str) -> App:
    """An app by id (a uid or xw://SERVER/UID: that app only), else by name within the
    namespace ``p`` trusts (:func:`common.resolve_name`; names are unique per owner, and
    among super users, so two group members' apps of one name are an ambiguity to name by
    id); the caller checks access (a 403 names an app of a trusted owner
    that ``p`` may not run)."""
    uid = id_in_ref(ref, "app")
    if uid is not None:
        return get_or_404(db, App, uid, "app")
    rows = db.scalars(select(App).where(App.name == ref)).all()
    return resolve_name(db, p, rows, "app", visible=lambda a: (
        policy.allows(p, a, "r") or policy.allows(p, a, "x")))[0]


def create(db: Session, p: Principal, name: str, kind: str, binaries: dict[str, str],
           access_rights: int = PUBLIC) -> App:
    policy.require(p, "insert_app")
    if not NAME_RE.match(name):
        raise BadRequest("an app name is 1-128 letters, digits or _.+-", code="bad_name")
    check_name(name, "app")
    if kind == "native" and not binaries:
        raise BadRequest("a native app needs at least one binary (os/arch → data id)",
                         code="no_binary")
    if kind == "shared" and binaries:
        raise BadRequest("a shared app has no binaries: workers provide it", code="bad_kind")
    if db.scalars(select(App.uid).where(App.name == name, same_namespace(db, p, App))
                  .limit(1)).first():
        raise Conflict("you already have an app of that name", code="exists")
    checked = _binary_data(db, p, binaries)
    app = App(name=name, kind=kind, owner_uid=p.uid, group_uid=p.group_uid,
              access_rights=access_rights, version=1)
    db.add(app)
    db.flush()
    for (os_name, arch), data in sorted(checked.items()):
        db.add(AppBinary(app_uid=app.uid, os=os_name, arch=arch, data_uid=data.uid))
    events.record(db, "app_created", object_uid=app.uid, actor_uid=p.uid,
                  detail=f"{name} ({kind})")
    return app


def _binary_data(db: Session, p: Principal,
                 binaries: dict[str, str]) -> dict[tuple[str, str], Data]:
    """Each platform checked, with its data: readable by ``p`` and uploaded; every problem
    found before anything is written."""
    checked: dict[tuple[str, str], Data] = {}
    for platform, data_uid in sorted(binaries.items()):
        key = check_platform(platform)
        if key in checked:
            raise BadRequest(f"two binaries for {'/'.join(key)}", code="bad_platform")
        data = get_or_404(db, Data, data_uid, "data")
        policy.check(p, data, "r", "data")
        if data.status != "available":
            raise BadRequest(f"binary data {data.uid} for {platform} has no content yet",
                             code="data_pending")
        checked[key] = data
    return checked


def binaries(db: Session, app_uid: str) -> dict[str, str]:
    rows = db.scalars(select(AppBinary).where(AppBinary.app_uid == app_uid)).all()
    return {f"{b.os}/{b.arch}": b.data_uid for b in rows}


def signed_binaries(db: Session, app_uid: str) -> list[dict[str, Any]]:
    """Each binary's platform and content, as the manifest names them."""
    rows = db.execute(select(AppBinary, Data).join(Data, Data.uid == AppBinary.data_uid)
                      .where(AppBinary.app_uid == app_uid)).all()
    return [{"os": b.os, "arch": b.arch, "sha256": d.sha256, "size": d.size}
            for b, d in sorted(rows, key=lambda r: (r[0].os, r[0].arch))]


def description_for_worker(db: Session, app: App) -> dict[str, Any]:
    """What a worker verifies before it runs the app: the manifest's fields (it
    recomputes the manifest from them), the manifest as the server computes it, and the
    signatures over it."""
    doc = {"uid": app.uid, "name": app.name, "kind": app.kind,
           "binaries": signed_binaries(db, app.uid)}
    return {**doc, "manifest": signing.canonical_app_manifest(doc),
            "signatures": [dict(s) for s in app.signatures or []]}


def add_signature(db: Session, p: Principal, ref: str, public_key_b64: str,
                  signature_b64: str) -> App:
    """Store a signature after checking it against the app's manifest and the key sent
    with it (one signature per key)."""
    policy.require(p, "insert_app")
    app = find(db, p, ref)
    policy.check(p, app, "w", "app")
    if app.kind != "native":
        raise BadRequest("a shared app has no binaries: there is nothing to sign",
                         code="nothing_to_sign")
    public = signing.public_from_b64(public_key_b64)
    manifest = description_for_worker(db, app)["manifest"]
    if not signing.valid(manifest, public, signature_b64):
        raise BadRequest(f"the signature does not verify against app {app.uid}'s manifest "
                         "with that key", code="bad_signature")
    sig = {"key_id": signing.key_id(public), "public_key": public_key_b64,
           "signature": signature_b64}
    app.signatures = [s for s in app.signatures or [] if s["key_id"] != sig["key_id"]] + [sig]
    if db.get(AppSigner, (app.uid, sig["key_id"])) is None:
        db.add(AppSigner(app_uid=app.uid, key_id=sig["key_id"]))
    events.record(db, "app_signed", object_uid=app.uid, actor_uid=p.uid,
                  detail=f"key {sig['key_id']}")
    return app


def list_apps(db: Session, p: Principal) -> list[App]:
    policy.require(p, "list")
    return [a for a in db.scalars(select(App).order_by(App.name)) if policy.allows(p, a, "r")]


def delete(db: Session, p: Principal, ref: str) -> None:
    app = find(db, p, ref)
    policy.check_delete(p, app, "app")
    unfinished = db.scalars(select(Work.uid).where(
        Work.app_uid == app.uid, Work.status.not_in(states.TERMINAL))).all()
    if unfinished:
        raise Conflict(f"app {app.name} has {len(unfinished)} unfinished jobs: abort or "
                       "remove them first", code="in_use",
                       details={"jobs": sorted(unfinished)[:20]})
    db.delete(app)  # final jobs keep its uid, and the events its story
    events.record(db, "app_deleted", object_uid=app.uid, actor_uid=p.uid, detail=app.name)


def update_binaries(db: Session, p: Principal, ref: str, binaries: dict[str, str],
                    remove: list[str]) -> App:
    """Add or replace a native app's binary per platform, or remove some: a new version
    of the app, whose signatures are dropped (they sign the old manifest: sign it anew).
    Jobs not yet on a worker run the new version; a job on a worker keeps the binary it
    fetched (and runs the new one if it is given back); final jobs keep the record of
    the binaries they ran (their ``app`` files)."""
    policy.require(p, "insert_app")
    app = find(db, p, ref)
    policy.check(p, app, "w", "app")
    if app.kind != "native":
        raise BadRequest("a shared app has no binaries: workers provide it", code="bad_kind")
    checked = _binary_data(db, p, binaries)
    current = {(b.os, b.arch): b for b in
               db.scalars(select(AppBinary).where(AppBinary.app_uid == app.uid))}
    gone = [check_platform(plat) for plat in remove]
    for key in gone:
        if key in checked:
            raise BadRequest(f"{'/'.join(key)} is both replaced and removed",
                             code="bad_platform")
        if key not in current:
            raise BadRequest(f"app {app.name} has no binary for {'/'.join(key)}",
                             code="no_binary")
    left = (set(current) - set(gone)) | set(checked)
    if not left:
        raise BadRequest("a native app keeps at least one binary", code="no_binary")
    changes = _apply(db, app, current, checked, gone)
    if not changes:
        return app
    app.version += 1
    app.signatures = []
    db.execute(AppSigner.__table__.delete().where(AppSigner.app_uid == app.uid))
    db.flush()
    _retarget_jobs(db, app)
    events.record(db, "app_updated", object_uid=app.uid, actor_uid=p.uid,
                  detail=f"version {app.version}: " + "; ".join(changes)
                  + " (unsigned until signed anew)")
    return app


def _apply(db: Session, app: App, current: dict[tuple[str, str], AppBinary],
           checked: dict[tuple[str, str], Data], gone: list[tuple[str, str]]) -> list[str]:
    changes = []
    for key in gone:
        db.delete(current[key])
        changes.append(f"{'/'.join(key)} removed (was data {current[key].data_uid})")
    for key, data in sorted(checked.items()):
        old = current.get(key)
        if old is None:
            db.add(AppBinary(app_uid=app.uid, os=key[0], arch=key[1], data_uid=data.uid))
            changes.append(f"{'/'.join(key)} added (data {data.uid})")
        elif old.data_uid != data.uid:
            changes.append(f"{'/'.join(key)} replaced (data {old.data_uid} -> {data.uid})")
            old.data_uid = data.uid
    return changes


def _retarget_jobs(db: Session, app: App) -> None:
    """The app files of the app's unfinished jobs become its current binaries: replaced
    for jobs no worker holds, added for those one holds (it may read what it fetched)."""
    now = set(binaries(db, app.uid).values())
    jobs = db.scalars(select(Work).where(Work.app_uid == app.uid,
                                         Work.status.not_in(states.TERMINAL))).all()
    for work in jobs:
        rows = db.scalars(select(WorkData).where(WorkData.work_uid == work.uid)).all()
        held = work.status in policy.ACTIVE_ON_WORKER
        for row in rows:
            if row.role == "app" and row.data_uid not in now and not held:
                db.delete(row)
        have = {row.data_uid for row in rows}
        for data_uid in sorted(now - have):
            db.add(WorkData(work_uid=work.uid, data_uid=data_uid, role="app", name=app.name))
    db.flush()
