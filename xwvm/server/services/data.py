"""Data objects: metadata in the database, content in the blob store."""

from __future__ import annotations

from typing import BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from xwvm.errors import BadRequest, Conflict
from xwvm.server import events, policy, states
from xwvm.server.blobs import BlobStore
from xwvm.server.db.models import AppBinary, Data, Work, WorkData
from xwvm.server.policy import Principal
from xwvm.server.rights import PUBLIC
from xwvm.server.services.common import check_name, get_or_404


def create(db: Session, p: Principal, name: str, *, size: int | None = None,
           sha256: str | None = None, access_rights: int = PUBLIC) -> Data:
    policy.require(p, "insert_data")
    check_name(name, "data")  # data is named by id only, but a name never reads as one
    data = Data(name=name, size=size, sha256=sha256.lower() if sha256 else None,
                owner_uid=p.uid, group_uid=p.group_uid, access_rights=access_rights)
    db.add(data)
    db.flush()
    events.record(db, "data_created", object_uid=data.uid, actor_uid=p.uid, detail=name)
    return data


def store_content(db: Session, store: BlobStore, data: Data, stream: BinaryIO, length: int,
                  max_size: int, sha256: str | None, actor_uid: str, *,
                  what: str | None = None) -> Data:
    """Write the content once; the object becomes available only when it is verified. A
    full disk raises StorageFull (507) naming ``what`` (by default the data object) with
    nothing stored: the caller's transaction, which may have created ``data``, is rolled
    back by the error handler."""
    if data.status == "available":
        raise Conflict(f"data {data.uid} already has its content; create a new data object",
                       code="already_uploaded")
    if data.size is not None and data.size != length:
        raise BadRequest(f"data {data.uid} was declared with {data.size} bytes, "
                         f"the upload has {length}", code="size_mismatch")
    expected = sha256 or data.sha256
    if sha256 and data.sha256 and sha256.lower() != data.sha256:
        raise BadRequest("the upload's X-Content-SHA256 differs from the declared sha256",
                         code="checksum_mismatch")
    blob = store.put_stream(stream, length=length, max_size=max_size, expected_sha256=expected,
                            what=what or f"the {length} bytes of data {data.uid}")
    data.size, data.sha256, data.status = blob.size, blob.sha256, "available"
    events.record(db, "data_uploaded", object_uid=data.uid, actor_uid=actor_uid,
                  detail=f"{blob.size} bytes sha256 {blob.sha256}")
    release_data_requests(db, data.uid)
    return data


def release_data_requests(db: Session, data_uid: str) -> None:
    """Jobs waiting in DATAREQUEST for this data go to PENDING once all inputs are there."""
    waiting = db.scalars(select(Work).join(WorkData, WorkData.work_uid == Work.uid)
                         .where(WorkData.data_uid == data_uid,
                                Work.status == states.DATAREQUEST)).all()
    for work in waiting:
        if not missing_inputs(db, work.uid):
            states.move(db, work, states.PENDING, actor_uid=None, reason="all inputs uploaded")


def missing_inputs(db: Session, work_uid: str) -> list[str]:
    q = (select(Data.uid).join(WorkData, WorkData.data_uid == Data.uid)
         .where(WorkData.work_uid == work_uid, Data.status != "available"))
    return list(db.scalars(q))


def followers(db: Session, work: Work, mode: int, new_mode: int) -> list[Data]:
    """The data objects that take a job's rights when its owner changes them from ``mode``
    to ``new_mode``: its results, and the inputs uploaded for it (``xwvm submit --input``
    creates them with the job's rights). Only what still has the job's rights ``mode`` and
    is its owner's, and, for inputs, what no other job and no app uses: shared data, and
    data whose rights were set apart from the job's, keep their own rights. Inputs follow
    only a change that grants nothing new: the server cannot tell an input uploaded for
    the job from the owner's own private file given to it, and must never publish the
    latter."""
    found = [work.result_data_uid] if work.result_data_uid else []
    if new_mode & ~mode == 0:
        found += db.scalars(select(WorkData.data_uid).where(
            WorkData.work_uid == work.uid, WorkData.role.in_(("input", "stdin"))))
    rows = db.scalars(select(Data).where(Data.uid.in_(found), Data.owner_uid == work.owner_uid,
                                         Data.access_rights == mode)).all()
    return [d for d in rows if d.uid == work.result_data_uid or not _used_elsewhere(db, d, work)]


def _used_elsewhere(db: Session, data: Data, work: Work) -> bool:
    other_job = select(WorkData.work_uid).where(WorkData.data_uid == data.uid,
                                                WorkData.work_uid != work.uid).limit(1)
    app = select(AppBinary.app_uid).where(AppBinary.data_uid == data.uid).limit(1)
    return (db.execute(other_job).first() is not None
            or db.execute(app).first() is not None)


def get_readable(db: Session, p: Principal, uid: str) -> Data:
    data = get_or_404(db, Data, uid, "data")
    policy.check_data_read(db, p, data)
    return data


def list_data(db: Session, p: Principal) -> list[Data]:
    policy.require(p, "list")
    rows = db.scalars(select(Data).order_by(Data.created_at)).all()
    return [d for d in rows if policy.allows(p, d, "r")]


def delete(db: Session, store: BlobStore, p: Principal, uid: str) -> None:
    data = get_or_404(db, Data, uid, "data")
    policy.check_delete(p, data, "data")
    used = db.execute(select(WorkData.work_uid).join(Work, Work.uid == WorkData.work_uid)
                      .where(WorkData.data_uid == data.uid,
                             Work.status.not_in(tuple(states.TERMINAL))).limit(1)).first()
    if used or db.execute(select(AppBinary.app_uid)
                          .where(AppBinary.data_uid == data.uid).limit(1)).first():
        raise Conflict(f"data {uid} is used by an app or an unfinished job", code="in_use")
    db.query(WorkData).filter(WorkData.data_uid == data.uid).delete()
    sha = data.sha256 if data.status == "available" else None
    db.delete(data)
    db.flush()
    if sha and db.scalars(select(Data.uid).where(Data.sha256 == sha, Data.status == "available")
                          .limit(1)).first() is None:
        store.remove(sha)
    events.record(db, "data_deleted", object_uid=uid, actor_uid=p.uid)
