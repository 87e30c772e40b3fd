"""Randomized fault soak: many short VM jobs on real workers while random infrastructure
faults hit every part of the grid; then no job may be lost or done twice, and nothing may
be left behind.

A real server (gunicorn, TLS on loopback, SQLite) with a short alive period, a fast reaper
and a short host pause, the built "base" template pushed, signed and published, and real
workers (``--hypervisor libvirt``) on the system libvirtd. A feeder keeps a few short VM
jobs pending (``echo soak-N-NONCE; sleep 2``, max_retries 50). After a warm-up (every
worker has run a job: its template is cached), K faults are injected, one at a time, each
after a random 2-15 s, each of a random kind:

- ``qemu``: kill -9 of a running job's QEMU process;
- ``worker_kill`` / ``worker_term``: kill -9 / SIGTERM of a worker, then the same worker
  (name, credential, work dir) started again;
- ``libvirtd``: the system libvirtd stopped (SIGTERM) and started again (``libvirtd -d``);
- ``server_kill``: kill -9 of the server, then started again on the same port;
- ``server_stop``: the server frozen (SIGSTOP) for two alive periods, then SIGCONT.

Then the queue drains (no new jobs) and the checks run: every job submitted is final
(COMPLETED or ERROR with its reason), none COMPLETED twice, every result is its own
command's output, the retries by fault kind, and no leftovers (domains, QEMU processes,
VM files, job folders, data rows that are no job's result). Exit status 1 if a job is lost,
duplicated or in ERROR (every payload succeeds: an ERROR is an infrastructure fault made
the user's), if a worker exited by itself, or if anything is left over; the evidence (the
job's events, the worker log lines naming it) is in the figures. Needs root and
scripts/install-vm-host.sh; restarts the system libvirtd (not while other VM tests run).

    .venv/bin/python bench/soak_faults.py [--kills 100] [--max-minutes 30] [--workers 2]
        [--faults qemu,worker_kill,...] [--seed N] [--keep]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support import faults  # noqa: E402
from tests.support.processes import ServerProcess, WorkerProcess, run_cli  # noqa: E402
from xwvm import signing  # noqa: E402
from xwvm.client.imagebuild.cache import built_image  # noqa: E402
from xwvm.client.sdk import ApiError, Client  # noqa: E402
from xwvm.protocol.vocab import TERMINAL_STATUSES  # noqa: E402
from xwvm.worker.credential import Credential  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
ALIVE_PERIOD_S = 2
SERVER_ENV = {"XWVM_REAP_INTERVAL_S": "0.5", "XWVM_IDLE_RETRY_S": "1",
              "XWVM_HOST_FIRST_PAUSE_S": "2", "XWVM_HOST_MAX_PAUSE_S": "10"}
MAX_RETRIES = 50
WALL_CLOCK_S = 600
DELAY_S = (2.0, 15.0)
KINDS = ("qemu", "worker_kill", "worker_term", "libvirtd", "server_kill", "server_stop")
RUNNING = ("RUNNING", "RESULTREQUEST")
GIVEN_BACK = re.compile(r"given back by its worker \(([^)]*)\)")


@dataclass
class Injected:
    at_s: float      # since the soak's start
    kind: str
    target: str
    took_s: float
    ok: bool = True


@dataclass
class Soak:
    server: ServerProcess
    admin: Client
    root: Path
    public_key: Path
    workers: list[WorkerProcess]
    rng: random.Random
    started: float = field(default_factory=time.monotonic)
    submitted: dict[str, str] = field(default_factory=dict)  # uid -> command
    uncertain: int = 0  # submissions whose answer was lost (the job may exist)
    injected: list[Injected] = field(default_factory=list)
    data_before: set[str] = field(default_factory=set)
    exits: list[str] = field(default_factory=list)  # workers that exited by themselves
    feeding: threading.Event = field(default_factory=threading.Event)

    def elapsed(self) -> float:
        return time.monotonic() - self.started


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- the grid ----------------------------------------------------------------------------

def start_grid(root: Path) -> tuple[ServerProcess, Path]:
    """The server started, the base template pushed (qcow2), signed and published; the
    public key that checks its signature."""
    image = built_image(REPO / "templates" / "base.yaml")
    server = ServerProcess(root / "srv", alive_period=ALIVE_PERIOD_S, env=SERVER_ENV).init()
    server.start()
    home = root / "admin-cli"
    run_cli(["login", "--server", server.url, "--ca", str(server.ca), "--user", "admin",
             "--password-file", str(server.password_file)], home)
    keys = root / "keys"
    run_cli(["admin", "keygen", "-o", str(keys)], home)
    run_cli(["template", "push", str(image), "--disk-format", "qcow2"], home, timeout=900)
    manifest = json.loads((image / "manifest.json").read_text())
    ref = f"{manifest['name']}:{manifest['version']}"
    run_cli(["template", "sign", ref, "--key", str(keys / signing.PRIVATE_KEY_FILE)], home)
    run_cli(["template", "publish", ref], home)
    return server, keys / signing.PUBLIC_KEY_FILE


def new_worker(root: Path, admin: Client, server: ServerProcess, public_key: Path,
               name: str) -> WorkerProcess:
    cred = admin.enroll_worker()
    path = root / f"{name}.cred"
    Credential(server=server.url, login=cred["login"], password=cred["password"],
               ca_pem=server.ca.read_text()).save(path)
    return WorkerProcess(root, path, name, extra=worker_args(public_key)).start()


def worker_args(public_key: Path) -> list[str]:
    return ["--hypervisor", "libvirt", "--trusted-key", str(public_key),
            "--vm-hang-timeout", "180"]


def again(soak: Soak, old: WorkerProcess) -> WorkerProcess:
    """The same worker (name, credential, work dir, log file) started again."""
    w = WorkerProcess(soak.root, old.credential, old.name, extra=worker_args(soak.public_key))
    w.work_dir = old.work_dir
    return w.start()


def worker_id(w: WorkerProcess) -> str:
    with contextlib.suppress(FileNotFoundError):
        return (w.work_dir / "worker-id").read_text().strip()
    return ""


# --- the feeder --------------------------------------------------------------------------

def feed(soak: Soak, depth: int) -> None:
    """Keep ``depth`` jobs pending while ``soak.feeding`` is set."""
    client = soak.server.client()
    n = 0
    while soak.feeding.is_set():
        with contextlib.suppress(ApiError, OSError):
            pending = len(client.list_works(status="PENDING"))
            while pending < depth and soak.feeding.is_set():
                n += 1
                submit(soak, client, n)
                pending += 1
        time.sleep(1)


def submit(soak: Soak, client: Client, n: int) -> None:
    command = f"echo soak-{n}-{secrets.token_hex(4)}; sleep 2"
    try:
        job = client.submit(template="base", command=command, network="server",
                            max_retries=MAX_RETRIES, wall_clock_s=WALL_CLOCK_S)
    except ApiError:
        soak.uncertain += 1
        raise
    soak.submitted[job["uid"]] = command


def expected_output(command: str) -> str:
    return command.split(";")[0].removeprefix("echo ") + "\n"


def api(fn: Callable[[], Any], timeout: float = 120) -> Any:
    """``fn()`` retried while the server does not answer (a fault may be on it)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except ApiError as e:
            if e.status not in (0, 502, 503) or time.monotonic() > deadline:
                raise
            time.sleep(1)


def warm_up(soak: Soak, timeout: float) -> None:
    """Wait until every worker has completed a job (its template is cached)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = api(lambda: soak.admin.list_works(status="COMPLETED"))
        if len({w["host"] for w in done}) >= len(soak.workers):
            log(f"warm: {len(done)} job(s) completed, every worker has run one")
            return
        time.sleep(3)
    raise SystemExit(f"warm-up: not every worker completed a job within {timeout:.0f} s")


# --- the faults --------------------------------------------------------------------------

def running_domains(soak: Soak) -> list[str]:
    out = subprocess.run([*faults.VIRSH, "list", "--name"], capture_output=True, text=True,
                         timeout=60)
    prefixes = tuple(f"xwvm_{worker_id(w)}_" for w in soak.workers if worker_id(w))
    return [d for d in out.stdout.split() if prefixes and d.startswith(prefixes)]


def kill_qemu(soak: Soak) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        domains = running_domains(soak)
        for domain in soak.rng.sample(domains, k=len(domains)):
            if faults.kill_qemu(domain):
                return domain
        time.sleep(0.5)
    raise RuntimeError("no running job's QEMU to kill within 60 s")


def restart_worker(soak: Soak, sig: int) -> str:
    i = soak.rng.randrange(len(soak.workers))
    old = soak.workers[i]
    t0 = time.monotonic()
    try:
        rc = old.stop(sig, timeout=120)
        how = f"exit {rc} after {time.monotonic() - t0:.1f} s"
    except subprocess.TimeoutExpired:
        how = "no exit within 120 s: killed"
    soak.workers[i] = again(soak, old)
    return f"{old.name} ({how})"


def restart_libvirtd(soak: Soak) -> str:
    faults.restart_libvirtd(signal.SIGTERM)
    return "libvirtd"


def kill_server(soak: Soak) -> str:
    soak.server.stop(signal.SIGKILL)
    soak.server.start()
    return f"server :{soak.server.port}"


def freeze_server(soak: Soak) -> str:
    assert soak.server.proc is not None
    pgid = soak.server.proc.pid
    os.killpg(pgid, signal.SIGSTOP)
    try:
        time.sleep(2 * soak.server.alive_period)
    finally:
        os.killpg(pgid, signal.SIGCONT)
    return f"server :{soak.server.port} for {2 * soak.server.alive_period} s"


FAULTS: dict[str, Callable[[Soak], str]] = {
    "qemu": kill_qemu,
    "worker_kill": lambda soak: restart_worker(soak, signal.SIGKILL),
    "worker_term": lambda soak: restart_worker(soak, signal.SIGTERM),
    "libvirtd": restart_libvirtd, "server_kill": kill_server, "server_stop": freeze_server}


def inject(soak: Soak, kinds: list[str], kills: int, until: float) -> None:
    """``kills`` faults, each after a random delay, until the monotonic time ``until``."""
    while sum(f.ok for f in soak.injected) < kills and time.monotonic() < until:
        time.sleep(soak.rng.uniform(*DELAY_S))
        kind = soak.rng.choice(kinds)
        t0, at = time.monotonic(), soak.elapsed()
        try:
            target, ok = FAULTS[kind](soak), True
        except Exception as e:  # noqa: BLE001 - a fault that could not be made is recorded
            target, ok = f"not injected: {type(e).__name__}: {e}", False
        soak.injected.append(Injected(at, kind, target, time.monotonic() - t0, ok))
        watch_workers(soak)
        done = sum(f.ok for f in soak.injected)
        log(f"fault {done}/{kills} at {at:.0f} s: {kind} -> {target}")


def watch_workers(soak: Soak) -> None:
    """A worker that exited by itself (no fault of ours) is recorded and started again."""
    for i, w in enumerate(soak.workers):
        rc = w.proc.poll() if w.proc else None
        if rc is not None:
            tail = " | ".join(w.log.splitlines()[-3:])
            soak.exits.append(f"{w.name} exited by itself ({rc}) at {soak.elapsed():.0f} s: "
                              f"{tail}")
            log(f"worker {w.name} exited by itself ({rc}); started again")
            soak.workers[i] = again(soak, w)


def drain(soak: Soak, until: float) -> list[dict[str, Any]]:
    """Every job's final record, or the records when the time is up."""
    while True:
        watch_workers(soak)
        works = api(soak.admin.list_works)
        open_ = [w for w in works if w["status"] not in TERMINAL_STATUSES]
        if not open_ or time.monotonic() > until:
            return works
        time.sleep(3)


# --- the checks --------------------------------------------------------------------------

@dataclass
class Findings:
    works: list[dict[str, Any]]
    lost: list[str] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    retries_by_cause: collections.Counter[str] = field(default_factory=collections.Counter)
    host_events: collections.Counter[str] = field(default_factory=collections.Counter)
    leftovers: list[str] = field(default_factory=list)
    evidence: dict[str, list[str]] = field(default_factory=dict)
    exits: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.lost or self.duplicated or self.errors or self.leftovers
                    or self.exits)


def check_jobs(soak: Soak, works: list[dict[str, Any]]) -> Findings:
    """Lost, unfinished, errored and duplicated jobs, and the retries by their cause."""
    found = Findings(works, exits=list(soak.exits))
    known = {w["uid"] for w in works}
    found.lost = [u for u in soak.submitted if u not in known]
    found.lost += [w["uid"] for w in works
                   if w["status"] not in TERMINAL_STATUSES and w["status"] not in RUNNING]
    found.unfinished = [w["uid"] for w in works if w["status"] in RUNNING]
    found.errors = {w["uid"]: w["error"] or "" for w in works if w["status"] == "ERROR"}
    events = api(soak.admin.events)
    moves: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for e in events:
        if e["kind"] == "transition":
            moves[e["object"]].append(e)
        elif e["kind"].startswith("host_"):
            found.host_events[e["kind"]] += 1
    for uid, story in moves.items():
        if sum(e["to"] == "COMPLETED" for e in story) > 1:
            found.duplicated.append(uid)
        for e in story:
            cause = retry_cause(e)
            if cause:
                found.retries_by_cause[cause] += 1
    found.duplicated += wrong_results(soak, works)
    return found


def retry_cause(e: dict[str, Any]) -> str:
    """What a transition that costs a retry names as its cause ("" if it costs none)."""
    detail = e["detail"] or ""
    if e["from"] in RUNNING and e["to"] == "PENDING":
        m = GIVEN_BACK.search(detail)
        return f"given back: {m.group(1) if m else detail[:60]}"
    if e["to"] == "LOST":
        if "restarted" in detail:
            return "lost: worker restarted"
        if "heartbeats" in detail:
            return "lost: worker silent"
        return f"lost: {detail[:60]}"
    return ""


def wrong_results(soak: Soak, works: list[dict[str, Any]]) -> list[str]:
    """COMPLETED jobs whose result is not exactly their own command's output."""
    wrong = []
    dest = soak.root / "results"
    dest.mkdir(exist_ok=True)
    for w in works:
        if w["status"] != "COMPLETED":
            continue
        archive = api(lambda w=w: soak.admin.download_result(w["uid"], dest / f"{w['uid']}.tgz"))
        with tarfile.open(archive) as tar:
            member = tar.extractfile("stdout.txt")
            got = member.read().decode() if member else None
        if got != expected_output(w["command"]):
            wrong.append(w["uid"])
            log(f"job {w['uid']}: stdout {got!r}, its command {w['command']!r}")
    return wrong


def check_leftovers(soak: Soak, works: list[dict[str, Any]], settle_s: float) -> list[str]:
    """Everything of the workers' jobs still there after ``settle_s`` (the workers sweep
    between jobs), and data rows that are no job's result."""
    deadline = time.monotonic() + settle_s
    while True:
        left = [f"{w.name}: {x}" for w in soak.workers
                for x in faults.leftovers(w.work_dir, worker_id(w))]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(2)
    results = {w["result"] for w in works if w["result"]}
    data = {d["uid"] for d in api(soak.admin.list_data)} - soak.data_before
    return left + [f"data row {uid} (no job's result)" for uid in sorted(data - results)]


def evidence(soak: Soak, uid: str) -> list[str]:
    """A job's events and every worker log line that names it."""
    lines = [f"event {e['at']} {e['kind']} {e['from']}->{e['to']}: {e['detail']}"
             for e in api(lambda: soak.admin.events(uid))]
    for w in soak.workers:
        lines += [f"{w.name}.log: {line}" for line in w.log.splitlines() if uid in line]
    return lines


# --- the report --------------------------------------------------------------------------

def report(soak: Soak, found: Findings, phases: dict[str, float]) -> dict[str, Any]:
    works = found.works
    statuses = collections.Counter(w["status"] for w in works)
    ok = [f for f in soak.injected if f.ok]
    minutes = phases["total"] / 60
    return {
        "faults injected": len(ok),
        "faults by kind": dict(collections.Counter(f.kind for f in ok)),
        "faults not injected": [f"{f.kind}: {f.target}" for f in soak.injected if not f.ok],
        "fault time s (mean by kind)": {
            k: round(sum(f.took_s for f in ok if f.kind == k)
                     / sum(f.kind == k for f in ok), 1) for k in KINDS
            if any(f.kind == k for f in ok)},
        "jobs submitted": len(works), "submissions unanswered": soak.uncertain,
        "statuses": dict(statuses),
        "errors": dict(collections.Counter(found.errors.values())),
        "lost": found.lost, "unfinished (running at the end)": found.unfinished,
        "duplicated": found.duplicated,
        "retries": sum(w["retries"] for w in works),
        "retries by cause": dict(found.retries_by_cause.most_common()),
        "most retries of one job": max((w["retries"] for w in works), default=0),
        "host events": dict(found.host_events),
        "leftovers": found.leftovers,
        "workers that exited by themselves": found.exits,
        "phases s": {k: round(v) for k, v in phases.items()},
        "jobs completed per minute": round(statuses["COMPLETED"] / max(minutes, 1e-9), 2),
        "evidence": found.evidence,
        "timeline": [f"{f.at_s:7.1f} s {f.kind} -> {f.target} ({f.took_s:.1f} s)"
                     for f in soak.injected],
    }


def run(soak: Soak, args: argparse.Namespace, until: float) -> tuple[Findings, dict]:
    """Feed, warm up, inject, drain, check; the findings and each phase's seconds."""
    soak.feeding.set()
    feeder = threading.Thread(target=feed, args=(soak, len(soak.workers) + 2), daemon=True)
    feeder.start()
    t0 = time.monotonic()
    warm_up(soak, timeout=600)
    t1 = time.monotonic()
    inject(soak, args.faults.split(","), args.kills, until - args.drain_minutes * 60)
    soak.feeding.clear()
    feeder.join(timeout=120)
    t2 = time.monotonic()
    log(f"faults done ({len(soak.injected)} tried); draining")
    works = drain(soak, until)
    t3 = time.monotonic()
    log("drained; checking")
    found = check_jobs(soak, works)
    found.leftovers = check_leftovers(soak, works, settle_s=90)
    for w in soak.workers:
        w.stop()
    found.leftovers += [x for x in check_leftovers(soak, works, settle_s=0)
                        if x not in found.leftovers]
    for uid in [*found.lost, *found.duplicated, *found.errors]:
        found.evidence[uid] = evidence(soak, uid)
    return found, {"warm-up": t1 - t0, "faults": t2 - t1, "drain": t3 - t2,
                   "total": t3 - t0}


def setup(root: Path, n_workers: int, rng: random.Random) -> Soak:
    server, public_key = start_grid(root)
    admin = server.client()
    workers = [new_worker(root, admin, server, public_key, f"soak{i}")
               for i in range(n_workers)]
    soak = Soak(server, admin, root, public_key, workers, rng)
    soak.data_before = {d["uid"] for d in admin.list_data()}
    log(f"grid up in {root}: server {server.url}, workers "
        f"{', '.join(w.name for w in workers)}")
    return soak


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=100, help="faults to inject")
    ap.add_argument("--max-minutes", type=float, default=30,
                    help="the whole soak's bound, from the start of the grid")
    ap.add_argument("--drain-minutes", type=float, default=6,
                    help="kept at the end for the queue to drain (no faults)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--faults", default=",".join(KINDS), help="the kinds to choose from")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--json", type=Path, help="write the figures there too")
    ap.add_argument("--keep", action="store_true",
                    help="keep the soak's folder (a failed soak keeps its logs)")
    args = ap.parse_args()
    unknown = set(args.faults.split(",")) - set(KINDS)
    if unknown:
        ap.error(f"unknown fault kinds: {sorted(unknown)}")
    return args


def main() -> int:
    args = parse()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stopped: clean up all the same
    seed = args.seed if args.seed is not None else secrets.randbelow(2**32)
    until = time.monotonic() + args.max_minutes * 60
    root = Path(tempfile.mkdtemp(prefix="xwvm-soak-", dir="/var/tmp"))
    root.chmod(0o711)  # the QEMU user traverses it to the workers' VM folders
    log(f"soak: {args.kills} faults of {args.faults}, seed {seed}, {args.workers} workers")
    soak: Soak | None = None
    failed = True
    try:
        soak = setup(root, args.workers, random.Random(seed))
        found, phases = run(soak, args, until)
        figures = {"seed": seed, **report(soak, found, phases)}
        print(json.dumps(figures, indent=2))
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2) + "\n")
        failed = found.failed
    finally:
        teardown(soak, root, args.keep, failed)
    return 1 if failed else 0


def teardown(soak: Soak | None, root: Path, keep: bool, failed: bool) -> None:
    """Everything stopped and removed (domains a failed soak left included); on failure
    the logs are kept (``keep``: the whole folder)."""
    if soak is not None:
        soak.feeding.clear()
        for w in soak.workers:
            w.stop()
            remove_domains(f"xwvm_{worker_id(w)}_" if worker_id(w) else "")
        soak.server.stop()
    if keep:
        log(f"kept {root}")
        return
    if failed:
        logs = Path(tempfile.mkdtemp(prefix="xwvm-soak-logs-", dir="/var/tmp"))
        for path in [*root.glob("*.log"), *root.glob("srv/*.log")]:
            shutil.copy(path, logs / path.name)
        log(f"the soak failed: its logs are in {logs}")
    shutil.rmtree(root, ignore_errors=True)


def remove_domains(prefix: str) -> None:
    """Destroy and undefine the domains named ``prefix...`` (none if it is empty)."""
    for domain in faults.domains(prefix) if prefix else ():
        for cmd in ("destroy", "undefine"):
            subprocess.run([*faults.VIRSH, cmd, domain], capture_output=True, timeout=60)

if __name__ == "__main__":
    sys.exit(main())
