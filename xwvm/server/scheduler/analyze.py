"""Why a pending job waits: each matching condition evaluated on its own against every
host (HTCondor's ``condor_q -better-analyze``).

The conditions are the scheduler's own (:func:`matching.checks`), each one's SQL run
separately for the job, plus the two a host must meet at request time: alive, and not
paused by its circuit breaker. The answer counts, per condition, the hosts that fail it,
and sums up in one line the first condition (in the order of :func:`matching.checks`)
that leaves no host, or says that some host could run the job now.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, select
from sqlalchemy.orm import Session

from xwvm.protocol import JobStatus
from xwvm.server.db.models import App, AppBinary, Host, Template, User, Work
from xwvm.server.scheduler import health
from xwvm.server.scheduler.matching import GROUP_READ, OTHER_READ, checks

#: What each condition asks of a host, as the analysis shows it.
ASKS = {
    "rights": "its worker may run this job (own, project's or public worker, by the rights)",
    "expected_host": "it is the host the job names (--host)",
    "native": "it runs native jobs (worker --allow-native or --hypervisor none)",
    "platform": "the app has a binary for its OS/arch, or it provides the shared app",
    "signed": "it trusts a key that signed the app",
    "hypervisor": "it has a usable hypervisor",
    "network": "its hypervisor enforces the job's network policy",
    "template_trusted": "it trusts a key that signed the template",
    "vm_limits": "the job's and the template's minimums fit its VM ceilings",
    "memory": "it has the memory the job asks for",
    "cpus": "it has the CPUs the job asks for",
    "disk": "it has the free disk the job asks for",
    "alive": "it is alive (its worker's heartbeats arrive)",
    "not_paused": "its circuit breaker is closed (not paused after faults in a row)",
}


@dataclass(frozen=True)
class Condition:
    name: str
    asks: str
    failing: int

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "asks": self.asks, "failing": self.failing}


@dataclass(frozen=True)
class Analysis:
    """``hosts``: the hosts considered (every one not gone); ``matching``: those that
    meet every condition now; ``conditions``: how many fail each (those about the job's
    kind only); ``summary``: one line."""

    uid: str
    status: str
    kind: str
    hosts: int
    matching: int
    conditions: tuple[Condition, ...]
    summary: str

    def to_json(self) -> dict[str, Any]:
        return {"uid": self.uid, "status": self.status, "kind": self.kind,
                "hosts": self.hosts, "matching": self.matching,
                "conditions": [c.to_json() for c in self.conditions],
                "summary": self.summary}


def holds(db: Session, work: Work, exprs: list[Any]) -> list[bool]:
    """Each SQL condition's value for ``work``, evaluated one by one in one query (a
    NULL, as in a WHERE clause, is false)."""
    if not exprs:
        return []
    row = db.execute(select(*[case((e, 1), else_=0) for e in exprs])
                     .where(Work.uid == work.uid)).one()
    return [bool(v) for v in row]


def _host_results(db: Session, work: Work, host: Host, worker: User | None,
                  kind: str) -> dict[str, bool]:
    found: dict[str, bool] = {"rights": False}  # no worker account: nothing goes there
    if worker is not None:
        mine = [c for c in checks(host, worker) if c.kind in ("all", kind)]
        found = dict(zip([c.name for c in mine], holds(db, work, [c.expr for c in mine]),
                         strict=True))
    found["alive"] = host.status == "alive"
    found["not_paused"] = health.paused_for(host) == 0
    return found


def analyze(db: Session, work: Work) -> Analysis:
    """Why ``work`` waits (only a PENDING job is matched; others say why not)."""
    kind = "vm" if work.template_uid else "native"
    if work.status != JobStatus.PENDING:
        return Analysis(work.uid, work.status, kind, 0, 0, (), _not_pending(work))
    hosts = list(db.scalars(select(Host).where(Host.status != "gone").order_by(Host.name)))
    workers = {u.uid: u for u in db.scalars(select(User).where(
        User.uid.in_({h.worker_user_uid for h in hosts})))}
    results = [_host_results(db, work, h, workers.get(h.worker_user_uid), kind)
               for h in hosts]
    names = [n for n in ASKS if any(n in r for r in results)]
    conditions = tuple(Condition(n, ASKS[n], sum(not r.get(n, True) for r in results))
                       for n in names)
    matching = sum(all(r.values()) for r in results)
    return Analysis(work.uid, work.status, kind, len(hosts), matching, conditions,
                    _summary(db, work, hosts, results, names))


def _not_pending(work: Work) -> str:
    if work.status == JobStatus.WAITING:
        return f"it is held (WAITING): xwvm release {work.uid} lets it run"
    if work.status == JobStatus.DATAREQUEST:
        return "it waits for its input data to be uploaded (DATAREQUEST)"
    if work.status in (JobStatus.RUNNING, JobStatus.RESULTREQUEST):
        return f"it is not waiting: it is {work.status} on host {work.host_uid}"
    return f"it is not waiting: it ended ({work.status})"


def _summary(db: Session, work: Work, hosts: list[Host], results: list[dict[str, bool]],
             names: list[str]) -> str:
    """The first condition that leaves no host, with the hosts before it in order."""
    if not hosts:
        return "no worker has registered with this server"
    left = list(range(len(hosts)))
    for name in names:
        passing = [i for i in left if results[i].get(name, True)]
        if not passing:
            return _why_none(db, work, name, len(left), len(hosts))
        left = passing
    return (f"{len(left)} host(s) can run it now: it waits its turn (older jobs, other "
            "owners' jobs, or busy workers)")


def _why_none(db: Session, work: Work, name: str, left: int, total: int) -> str:
    """The summary line when no host of the ``left`` that met the conditions before
    ``name`` meets ``name``."""
    if name in ("alive", "not_paused"):
        state = ("not alive (lost or stopped)" if name == "alive"
                 else "paused by their circuit breaker (infrastructure faults in a row)")
        return f"the {left} host(s) that could run it are {state}"
    text = _PHRASES[name](db, work)
    if left < total:
        text += f" (of the {left} of {total} hosts that pass the conditions before)"
    return text


def _rights(_db: Session, work: Work) -> str:
    mode = f"{work.access_rights:03o}"
    if work.access_rights & OTHER_READ:
        return (f"no worker may run it (rights {mode}): each is enrolled for one user's or "
                "one project's jobs, and no public worker is registered")
    if work.access_rights & GROUP_READ:
        return (f"it is readable by its group only (rights {mode}): only workers enrolled "
                "by you or for your project run it, and none is registered")
    return (f"it is private (rights {mode}): only workers enrolled by you (xwvm worker "
            "enroll) run it, and you have none")


def _platforms(db: Session, work: Work) -> str:
    app = db.get(App, work.app_uid) if work.app_uid else None
    if app is None:
        return "no worker offers its app"
    if app.kind == "shared":
        return (f"no worker provides shared app {app.name} (xwvm worker run --shared-app "
                f"{app.name})")
    plats = sorted(f"{b.os}/{b.arch}" for b in db.scalars(
        select(AppBinary).where(AppBinary.app_uid == app.uid)))
    return (f"no worker offers platform {', '.join(plats) or '(none)'}: the platform(s) "
            f"app {app.name} has a binary for")


def _template(db: Session, work: Work) -> str:
    t = db.get(Template, work.template_uid) if work.template_uid else None
    if t is None:
        return "no worker trusts a key that signed its template"
    signers = ", ".join(sorted(str(s.get("key_id")) for s in t.signatures or ())) or "none"
    return (f"no worker trusts a key that signed template {t.name}:{t.version} (signed "
            f"by: {signers}; a worker trusts the keys given with --trusted-key)")


_PHRASES: dict[str, Any] = {
    "rights": _rights,
    "expected_host": lambda _db, w: (f"it must run on host {w.expected_host_uid} (--host), "
                                     "which is gone or may not run it"),
    "native": lambda _db, w: ("no worker runs native jobs (a worker runs them with "
                              "--allow-native, or --hypervisor none)"),
    "platform": _platforms,
    "signed": lambda db, w: (f"no worker trusts a key that signed app "
                             f"{getattr(db.get(App, w.app_uid), 'name', w.app_uid)}"),
    "hypervisor": lambda _db, w: "no worker has a usable hypervisor (VM jobs need one)",
    "network": lambda _db, w: f"no worker's hypervisor enforces network={w.network}",
    "template_trusted": _template,
    "vm_limits": lambda _db, w: ("no worker's VM ceilings fit the minimums of the job or "
                                 "of its template (memory, CPUs, disk)"),
    "memory": lambda _db, w: f"no worker has {w.min_memory_mb} MB of memory",
    "cpus": lambda _db, w: f"no worker has {w.min_cpus} CPUs",
    "disk": lambda _db, w: f"no worker has {w.min_disk_mb} MB of free disk",
}
