"""Jobs ("works"): submission, queries, owner actions, and the worker's reports."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field, replace
from typing import Any, BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from xwvm.errors import BadRequest, Conflict, Forbidden, NotFound
from xwvm.protocol import JobStatus, NetworkPolicy
from xwvm.protocol.calls import ProgressAnswer, Report
from xwvm.protocol.messages import InputFile, JobDescription, SignedApp, VMPart
from xwvm.protocol.vocab import MAX_MESSAGE, Fault
from xwvm.server import events, policy, states
from xwvm.server.auth import tokens
from xwvm.server.blobs import BlobStore
from xwvm.server.config import WallClock
from xwvm.server.db.models import (
    App,
    Context,
    Data,
    Host,
    Template,
    User,
    Work,
    WorkData,
    utcnow,
)
from xwvm.server.policy import Principal
from xwvm.server.rights import PUBLIC
from xwvm.server.scheduler import analyze, health
from xwvm.server.scheduler.health import Breaker
from xwvm.server.scheduler.matching import UNSUPPORTED_NETWORKS, confinement
from xwvm.server.services import apps as app_service
from xwvm.server.services import contexts as context_service
from xwvm.server.services import data as data_service
from xwvm.server.services.common import check_uid, get_or_404

ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
INPUT_NAME_RE = re.compile(r"^[A-Za-z0-9_.+-][A-Za-z0-9_.+/-]{0,254}\Z")


@dataclass
class WorkSpec:
    """A native job names an ``app``; a VM job names a ``template`` and a ``command``."""

    app: str | None = None
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    inputs: list[dict[str, str]] = field(default_factory=list)  # {data, name}
    stdin: str | None = None
    max_retries: int | None = None
    wall_clock_s: int | None = None
    min_memory_mb: int = 0
    min_cpus: int = 0
    min_disk_mb: int = 0
    expected_host: str | None = None
    listen_port: int | None = None
    label: str | None = None
    hold: bool = False
    access_rights: int = PUBLIC
    context: str | None = None
    template: str | None = None
    command: str | None = None
    network: str = NetworkPolicy.SERVER
    pilot: bool = False
    pilot_idle_s: int | None = None


def _check_spec(spec: WorkSpec) -> None:
    """What the API schema (api/works.py SUBMIT) cannot say: names, combinations, and the
    port range, whose refusal has its own code (``bad_port``)."""
    for name in spec.env:
        if not ENV_RE.match(name):
            raise BadRequest("an environment variable name is not valid (letters, digits, _)",
                             code="bad_env")
    names = [i["name"] for i in spec.inputs]
    for name in names:
        if not INPUT_NAME_RE.match(name) or ".." in name.split("/"):
            raise BadRequest("an input name must be a relative path without '..'",
                             code="bad_input_name")
    if len(set(names)) != len(names):
        raise BadRequest("two inputs have the same name", code="duplicate_input")
    if spec.listen_port is not None and not 1 <= spec.listen_port <= 65535:
        raise BadRequest("listen_port must be 1..65535", code="bad_port")
    if bool(spec.app) == bool(spec.template):
        raise BadRequest("a job names either an app (native) or a template (VM job)",
                         code="app_or_template")
    if spec.template and not spec.pilot and not (spec.command or "").strip():
        raise BadRequest("a VM job needs a command to run in the VM", code="no_command")
    if spec.pilot and not spec.template:
        raise BadRequest("a pilot is a VM job: give a template", code="pilot_needs_template")
    if spec.pilot and spec.network == NetworkPolicy.NONE:
        raise BadRequest("a pilot takes its jobs from the server: it cannot run with "
                         "network=none", code="pilot_needs_network")
    if spec.network in UNSUPPORTED_NETWORKS:
        raise BadRequest(f"network={spec.network} is not supported yet: "
                         f"{UNSUPPORTED_NETWORKS[spec.network]}; use server or none",
                         code="network_unsupported")


def submit(db: Session, p: Principal, spec: WorkSpec, default_max_retries: int) -> Work:
    policy.require(p, "insert_work")
    _check_spec(spec)
    app, template = _runs_what(db, p, spec)
    host = _expected_host(db, p, spec.expected_host) if spec.expected_host else None
    context = context_service.get_readable(db, p, spec.context) if spec.context else None
    work = Work(app_uid=app.uid if app else None,
                template_uid=template.uid if template else None, command=spec.command,
                network=spec.network, pilot=spec.pilot, pilot_idle_s=spec.pilot_idle_s,
                status=states.PENDING, args=list(spec.args),
                env=dict(spec.env), max_retries=(default_max_retries if spec.max_retries is None
                                                 else spec.max_retries),
                wall_clock_s=spec.wall_clock_s, min_memory_mb=spec.min_memory_mb,
                min_cpus=spec.min_cpus, min_disk_mb=spec.min_disk_mb,
                expected_host_uid=host.uid if host else None, listen_port=spec.listen_port,
                label=spec.label, owner_uid=p.uid, group_uid=p.group_uid,
                access_rights=spec.access_rights, context_uid=context.uid if context else None)
    db.add(work)
    db.flush()
    if host is not None:
        _check_runs_there(db, work, host)
    _attach_files(db, p, work, spec, app)
    first = states.WAITING if spec.hold else states.PENDING
    if data_service.missing_inputs(db, work.uid):
        first = states.DATAREQUEST
    work.status = first
    events.record(db, "transition", object_uid=work.uid, actor_uid=p.uid, to_status=first,
                  detail=f"submitted ({app.name if app else 'VM ' + template.name})")
    return work


def _expected_host(db: Session, p: Principal, ref: str) -> Host:
    """The host a job must run on (--host): one that exists and ``p`` may see."""
    host = get_or_404(db, Host, ref, "host")
    if host.status == "gone" or not policy.allows(p, host, "r"):
        raise NotFound(f"no host with id {ref}", code="unknown_host")
    return host


def _check_runs_there(db: Session, work: Work, host: Host) -> None:
    """Refuse a job that its expected host could never run: its worker's confinement (the
    scheduler's own condition) keeps it off, whatever else changes."""
    worker = db.get(User, host.worker_user_uid)
    if worker is not None and analyze.holds(db, work, [confinement(worker)]) == [True]:
        return
    mode = f"{work.access_rights:03o}"
    if worker is None:
        reason = "it has no worker account"
    elif worker.confine_user_uid:
        reason = "its worker runs only the jobs of the user who enrolled it"
    elif worker.confine_group_uid:
        reason = (f"its worker runs only its project's group-readable jobs (this one: rights "
               f"{mode}, group {work.group_uid})")
    else:
        reason = f"its worker runs only public jobs (rights like 755; this one: {mode})"
    raise BadRequest(f"host {host.name} ({host.uid}) can never run this job: {reason}",
                     code="host_not_allowed")


def why(db: Session, p: Principal, uid: str) -> analyze.Analysis:
    """Why a job waits (:mod:`xwvm.server.scheduler.analyze`), to its owner or an
    administrator: it counts the hosts that fail each condition."""
    work = get_or_404(db, Work, uid, "job")
    if work.owner_uid != p.uid and p.level < policy.Level.SUPER:
        raise Forbidden(f"only the owner of job {uid} or an administrator may ask why it "
                        "waits", code="not_owner")
    return analyze.analyze(db, work)


def _runs_what(db: Session, p: Principal, spec: WorkSpec) -> tuple[App | None, Template | None]:
    """The app (native job) or the template (VM job) the job names, which ``p`` may run;
    a shared app's job runs, by default, the program of the app's name."""
    if not spec.app:
        from xwvm.server.services import templates as template_service
        return None, template_service.find_for_submit(db, p, spec.template)
    app = app_service.find(db, p, spec.app)
    policy.check(p, app, "x", "app")
    if app.kind == "shared" and not (spec.command or "").strip():
        spec.command = shlex.quote(app.name)  # workers provide a shared app
    if app.kind == "native" and spec.command:
        raise BadRequest(f"app {app.name} is a native program: it takes args, not a "
                         "command", code="bad_command")
    return app, None


def _attach_files(db: Session, p: Principal, work: Work, spec: WorkSpec,
                  app: App | None) -> None:
    """The job's inputs, stdin and app binaries, each data object once; ``p`` must be
    able to read the inputs (an app's binaries are the app's, run with its right)."""
    refs = [(i["data"], "input", i["name"]) for i in spec.inputs]
    if spec.stdin:
        refs.append((spec.stdin, "stdin", "stdin"))
    for data_uid in (app_service.binaries(db, app.uid).values() if app else ()):
        refs.append((data_uid, "app", app.name))
    seen: set[str] = set()
    for data_uid, role, name in refs:
        data = get_or_404(db, Data, data_uid, "data")
        if data.uid in seen:
            continue
        seen.add(data.uid)
        if role != "app":
            policy.check(p, data, "r", "data")
        db.add(WorkData(work_uid=work.uid, data_uid=data.uid, role=role, name=name))
    db.flush()


def get_readable(db: Session, p: Principal, uid: str) -> Work:
    work = get_or_404(db, Work, uid, "job")
    if p.is_worker:
        policy.check_worker_holds(db, p, work)
    else:
        policy.check(p, work, "r", "job")
    return work


def readable_result(db: Session, p: Principal, uid: str) -> Data:
    """A job's results, to someone who may read the job and, as for any data object, the
    results themselves: their owner may have narrowed them."""
    work = get_readable(db, p, uid)
    if work.result_data_uid is None:
        raise Conflict(f"job {uid} has no results yet (status {work.status})",
                       code="no_results")
    data = db.get(Data, work.result_data_uid)
    if data is None or data.sha256 is None or data.size is None:
        raise NotFound(f"the results of job {uid} are gone", code="no_results")
    policy.check_data_read(db, p, data)
    return data


def list_works(db: Session, p: Principal, uids: list[str] | None = None,
               status: str | None = None, limit: int = 1000) -> list[Work]:
    policy.require(p, "list")
    q = select(Work).order_by(Work.seq)
    if uids:
        q = q.where(Work.uid.in_([check_uid(u, "job") for u in uids]))
    if status:
        if status.upper() not in states.ALL:
            raise BadRequest("unknown status", code="bad_status")
        q = q.where(Work.status == status.upper())
    if p.level < policy.Level.SUPER and not uids:
        q = q.where(Work.owner_uid == p.uid)
    rows = db.scalars(q.limit(limit)).all()
    return [w for w in rows if policy.allows(p, w, "r")]


def owner_action(db: Session, p: Principal, uid: str, action: str) -> Work:
    """abort, hold or release, by someone with write access to the job."""
    work = get_or_404(db, Work, uid, "job")
    policy.check(p, work, "w", "job")
    target = {"abort": states.ABORTED, "hold": states.WAITING,
              "release": states.PENDING}.get(action)
    if target is None:
        raise BadRequest("unknown action", code="bad_action")
    if action == "release" and work.status != states.WAITING:
        raise Conflict(f"job {uid} is {work.status}, not WAITING", code="illegal_transition")
    reason = f"{action} by {p.login}"
    if target == states.PENDING and data_service.missing_inputs(db, work.uid):
        target = states.DATAREQUEST
    states.move(db, work, target, actor_uid=p.uid, reason=reason)
    return work


def delete(db: Session, store: BlobStore, p: Principal, uid: str) -> None:
    work = get_or_404(db, Work, uid, "job")
    policy.check_delete(p, work, "job")
    if work.status not in states.TERMINAL:
        states.move(db, work, states.ABORTED, actor_uid=p.uid, reason=f"removed by {p.login}")
    result = work.result_data_uid
    db.query(WorkData).filter(WorkData.work_uid == work.uid).delete()
    db.delete(work)
    db.flush()
    if result and db.get(Data, result) is not None:
        data_service.delete(db, store, p, result)
    events.record(db, "work_deleted", object_uid=uid, actor_uid=p.uid)


# --- the worker's side -----------------------------------------------------------------


def upload_result(db: Session, store: BlobStore, p: Principal, uid: str, stream: BinaryIO,
                  length: int, max_size: int, sha256: str | None) -> Data:
    work = get_or_404(db, Work, uid, "job")
    policy.check_worker_holds(db, p, work)
    result = Data(name=f"{uid}-results.tar.gz", owner_uid=work.owner_uid,
                  group_uid=work.group_uid, access_rights=work.access_rights)
    db.add(result)
    db.flush()
    data_service.store_content(db, store, result, stream, length, max_size, sha256, p.uid,
                               what=f"the result archive of job {uid} ({length} bytes)")
    old = work.result_data_uid
    work.result_data_uid = result.uid
    if old and db.get(Data, old) is not None:
        data_service.delete(db, store, _as_super(p), old)
    return result


def _as_super(p: Principal) -> Principal:
    return Principal(uid=p.uid, login=p.login, level=policy.Level.SUPER, group_uid=None)


def report(db: Session, p: Principal, uid: str, body: dict[str, Any],
           breaker: Breaker = Breaker()) -> Work:
    """The worker's final or intermediate report on a job it holds. The body is read
    only once the caller is known to hold the job (a stranger learns nothing from it)."""
    work = get_or_404(db, Work, uid, "job")
    if p.is_delegated and work.pilot_uid != p.scope_work_uid:
        raise Forbidden("the outer worker reports a VM job's status, not its nested worker",
                        code="forbidden_delegated")
    policy.check_worker_holds(db, p, work)
    try:
        got = Report.from_json(body)
    except ValueError as e:  # names the field, never its value
        raise BadRequest(f"invalid report: {e}", code="bad_status") from None
    _apply_report(db, p, work, got, (got.message or "")[:MAX_MESSAGE], breaker)
    return work


def _apply_report(db: Session, p: Principal, work: Work, got: Report, message: str,
                  breaker: Breaker) -> None:
    host = db.get(Host, work.host_uid) if work.host_uid else None
    if got.status == states.COMPLETED:
        if work.result_data_uid is None:
            raise Conflict(f"job {work.uid} has no uploaded results yet; upload them first",
                           code="no_results")
        work.exit_code = got.exit_code
        if got.exit_code not in (None, 0):
            states.move(db, work, states.ERROR, actor_uid=p.uid,
                        reason=message or f"exit code {got.exit_code}")
        else:
            states.move(db, work, states.COMPLETED, actor_uid=p.uid, reason=message)
    elif got.status == states.ERROR:
        work.exit_code = got.exit_code
        states.move(db, work, states.ERROR, actor_uid=p.uid,
                    reason=message or "the worker reported an error")
    elif got.status == states.RESULTREQUEST:
        work.exit_code = got.exit_code
        states.move(db, work, states.RESULTREQUEST, actor_uid=p.uid,
                    reason=message or "result upload failed; the worker retries")
    else:  # PENDING: Report admits nothing else
        _give_back(db, p, work, got.fault or Fault.HOST, message, breaker)
        return
    if host is not None:  # the job ran there: the host works
        health.note_success(db, host)


def _give_back(db: Session, p: Principal, work: Work, fault: Fault, message: str,
               breaker: Breaker) -> None:
    """The worker gave the job back for an infrastructure fault (or it is stopping): the
    retry counts, and so does the host's fault streak (its circuit breaker)."""
    host = db.get(Host, work.host_uid) if work.host_uid else None
    states.give_back(db, work, actor_uid=p.uid,
                     reason=f"given back by its worker ({fault}): "
                            f"{message or 'no reason given'}")
    if host is not None and not p.is_delegated:  # a pilot's nested worker, inside a VM,
        health.note_fault(db, host, fault, message, breaker)  # never steers the breaker


def progress(db: Session, p: Principal, uid: str, phase: str) -> ProgressAnswer:
    """A nested worker's (or worker's) sign of life for a running VM job. Answers whether
    it must stop; a job that is no longer running is answered, not refused, so the nested
    worker learns it."""
    work = get_or_404(db, Work, uid, "job")
    try:
        policy.check_worker_holds(db, p, work)
    except Conflict:
        return ProgressAnswer(stop=True, status=JobStatus(work.status))
    work.nested_seen_at = utcnow()
    return ProgressAnswer(stop=False, status=JobStatus(work.status), phase=phase)


def description_for_worker(db: Session, work: Work,
                           wall: WallClock = WallClock()) -> JobDescription:
    """What a worker needs to run the job: the app, the files to fetch, the limits (its
    own wall clock, or the server's default: the worker never has to guess one)."""
    rows = db.execute(select(WorkData, Data).join(Data, Data.uid == WorkData.data_uid)
                      .where(WorkData.work_uid == work.uid)).all()
    files = sorted((InputFile(role=wd.role, name=wd.name, data=d.uid, sha256=d.sha256,
                              size=d.size) for wd, d in rows),
                   key=lambda f: (f.role, f.name))
    app = app_service.get(db, work.app_uid) if work.app_uid else None
    return JobDescription(
        uid=work.uid, args=tuple(work.args), env=dict(work.env), files=tuple(files),
        wall_clock_s=work.wall_clock_s or wall.default_s, min_memory_mb=work.min_memory_mb,
        min_cpus=work.min_cpus, min_disk_mb=work.min_disk_mb, listen_port=work.listen_port,
        app=app.name if app else None,
        signed_app=SignedApp.from_json(app_service.description_for_worker(db, app))
        if app else None,
        command=work.command if app else None)


def pilot_work(db: Session, p: Principal, pilot_uid: str,
               wall: WallClock = WallClock()) -> JobDescription | None:
    """The next job a pilot VM runs: its owner's oldest pending job of an app the template
    shares, within what the pilot's outer worker may run. None when there is none."""
    pilot = get_or_404(db, Work, pilot_uid, "job")
    if not p.is_delegated or p.scope_work_uid != pilot.uid or not pilot.pilot:
        raise Forbidden("only a pilot VM's nested worker asks for work for it",
                        code="forbidden_delegated")
    policy.check_worker_holds(db, p, pilot)
    template = db.get(Template, pilot.template_uid)
    host = db.get(Host, pilot.host_uid) if pilot.host_uid else None
    worker = db.get(User, host.worker_user_uid) if host else None
    if template is None or worker is None or not template.shared_apps:
        return None
    pilot.nested_seen_at = utcnow()
    q = (select(Work).join(App, App.uid == Work.app_uid)
         .where(Work.status == states.PENDING, Work.owner_uid == pilot.owner_uid,
                App.kind == "shared", App.name.in_(list(template.shared_apps)),
                confinement(worker))
         .order_by(Work.seq).limit(1).with_for_update(skip_locked=True, of=Work))
    work = db.scalars(q).first()
    if work is None:
        return None
    states.move(db, work, states.RUNNING, actor_uid=p.uid,
                reason=f"taken by pilot VM job {pilot.uid}", host_uid=pilot.host_uid,
                pilot_uid=pilot.uid)
    return description_for_worker(db, work, wall)


def vm_description(db: Session, work: Work, secret: bytes,
                   wall: WallClock = WallClock()) -> JobDescription:
    """The whole description of a VM job for its outer worker: the common part, the
    template, the command, the network policy, the owner's context document and a
    credential delegated to the nested worker for this job only (revoked when the job
    ends)."""
    from xwvm.server.services import templates as template_service
    template = db.get(Template, work.template_uid)
    owner = db.get(User, work.owner_uid)
    context = db.get(Context, work.context_uid) if work.context_uid else None
    # It ends with the job's wall clock, as the reaper ends the job itself (both counted
    # from the assignment); it is revoked sooner if the job ends sooner.
    lifetime = (work.wall_clock_s or wall.default_s) + wall.grace_s
    token, _ = tokens.issue(db, secret, work.owner_uid, lifetime, kind="delegated",
                            scope_work_uid=work.uid)
    vm = VMPart(template=template_service.describe(template),
                owner=owner.login if owner else work.owner_uid, delegated_token=token,
                network=NetworkPolicy(work.network), pilot=bool(work.pilot),
                pilot_idle_s=work.pilot_idle_s,
                context=context.document if context else None)
    return replace(description_for_worker(db, work, wall), app=template.name,
                   command=work.command, vm=vm)
