"""Scheduler assignment throughput: work request -> assignment, over HTTPS and in-process.

For each database backend (SQLite, and PostgreSQL 15 started here from Debian's package)
and each server size (gunicorn processes x 8 threads), a real server is started
(``xwvm server init`` + ``xwvm server run``, TLS on loopback). 4 standard users own the
jobs of a public app; 16 public worker accounts hold 64 hosts, each simulated worker with
its own host and its own token. Then, for 1, 4, 16 and 64 simulated workers:

* ``POST /api/v1/hosts/HOST/work`` as fast as they can (assignments/s, p50, p99);
* the reference, measured the same way in the same run on the same server with the same
  token set: ``GET /api/v1/auth/whoami`` (one token + user lookup: the floor cost of an
  authenticated HTTPS request on this stack); and, once per server,
  ``GET /api/v1/health`` (no database at all).

Pending jobs are inserted straight into the database with the server's own models
(a ``Work``, its ``WorkData`` and its submission ``Event``, as ``services.works.submit``
writes them) because submitting tens of thousands of jobs over HTTP would take longer than
the benchmark; a few jobs per user are also submitted over HTTP. The queue is topped up
before every measurement so that it never runs dry (an empty answer is counted and flagged).

Correctness, checked at the end of every server: every job has at most one move to
RUNNING, the RUNNING jobs are exactly the jobs that were moved to RUNNING, and the uids the
load generator received are distinct and RUNNING. The server count of assignments must
equal the client count (Python generator), or exceed it by at most the requests that were
in flight when wrk stopped (wrk drops them unread).

Finally ``xwvm.server.scheduler.assign.assign`` (and the whole ``services.hosts.
request_work``) is timed in-process, with a commit per call, on both databases: the
database and scheduler cost without HTTP, TLS or the WSGI stack.

The load generator is ``wrk`` when it is installed (``apt-get install wrk``): one wrk
thread and one connection per simulated worker, each with its own token and host (so a
host never has two requests in flight), a Lua script counting assignments. Otherwise a
Python asyncio generator (keep-alive, raw HTTP/1.1 over TLS, one connection per simulated
worker). Either runs on the same cores as the server.

    .venv/bin/python bench/assign.py              # ~5 minutes
    .venv/bin/python bench/assign.py --quick      # ~1 minute
    .venv/bin/python bench/assign.py --generator python --backends sqlite
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shutil
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import func, insert, select, text  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from tests.support.postgres import PostgresServer  # noqa: E402
from tests.support.processes import ServerProcess  # noqa: E402
from xwvm.server import states  # noqa: E402
from xwvm.server.db.engine import make_engine, make_sessionmaker  # noqa: E402
from xwvm.server.db.models import Event, Host, User, Work, WorkData  # noqa: E402
from xwvm.server.policy import Principal  # noqa: E402
from xwvm.server.rights import Level  # noqa: E402
from xwvm.server.scheduler.assign import assign  # noqa: E402
from xwvm.server.services import hosts as host_service  # noqa: E402

GOAL_PER_S = 1000.0
BOINC_PER_S = 100.0
N_USERS = 4
N_WORKER_ACCOUNTS = 16
MAX_SIMULATED = 64
HOST_FACTS = {"os": "linux", "arch": "x86_64", "cpus": 4, "memory_mb": 8192,
              "disk_mb": 100_000}

LUA = r"""
-- xwvm bench: count assignments; write received job uids.
local threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(args)
  mode = args[2]
  -- one wrk thread = one connection = one simulated worker: its own token and host
  reqs = {}
  local n = 0
  for line in io.lines(args[1]) do
    n = n + 1
    local tok, host = line:match("^(%S+)%s+(%S+)$")
    if n == tid then
      local auth = {["Authorization"] = "Bearer " .. tok}
      if mode == "work" then
        auth["Content-Type"] = "application/json"
        reqs[1] = wrk.format("POST", "/api/v1/hosts/" .. host .. "/work", auth, "{}")
      elseif mode == "whoami" then
        reqs[1] = wrk.format("GET", "/api/v1/auth/whoami", auth, nil)
      else
        reqs[1] = wrk.format("GET", "/api/v1/health", nil, nil)
      end
    end
  end
  assigned, empty, other = 0, 0, 0
  if mode == "work" then
    out = io.open(args[3] .. "." .. tid, "w")
    out:setvbuf("line")
  end
end

function request()
  return reqs[1]
end

function response(status, headers, body)
  if status ~= 200 then
    other = other + 1
  elseif mode == "work" then
    local uid = body:match('"uid":%s*"([%x%-]+)"')
    if uid then
      assigned = assigned + 1
      out:write(uid, "\n")
    elseif body:find("retry_after", 1, true) then
      empty = empty + 1
    else
      other = other + 1
    end
  else
    assigned = assigned + 1
  end
end

function done(summary, latency, requests)
  local a, e, o = 0, 0, 0
  for _, t in ipairs(threads) do
    a = a + t:get("assigned"); e = e + t:get("empty"); o = o + t:get("other")
  end
  local er = summary.errors
  io.write(string.format(
    'XWVM {"requests":%d,"duration_s":%.6f,"p50_ms":%.3f,"p99_ms":%.3f,"ok":%d,' ..
    '"empty":%d,"other":%d,"socket_errors":%d}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3,
    latency:percentile(99) / 1e3, a, e, o,
    er.connect + er.read + er.write + er.timeout))
end
"""


@dataclass
class Result:
    requests: int
    duration_s: float
    p50_ms: float
    p99_ms: float
    ok: int  # assignments (work) or 200 answers (references)
    empty: int = 0  # "retry_after": the queue ran dry
    other: int = 0  # errors
    socket_errors: int = 0
    uids: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.ok / self.duration_s if self.duration_s else 0.0


# --- load generators ----------------------------------------------------------------------

class WrkGenerator:
    name = "wrk"

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.script = tmp / "xwvm-bench.lua"
        self.script.write_text(LUA)
        self.runs = 0

    def run(self, url: str, mode: str, pairs: list[tuple[str, str]], duration: float
            ) -> Result:
        self.runs += 1
        pairs_file = self.tmp / f"pairs-{self.runs}.txt"
        pairs_file.write_text("".join(f"{t} {h}\n" for t, h in pairs))
        uid_prefix = self.tmp / f"uids-{self.runs}"
        cmd = ["wrk", f"-t{len(pairs)}", f"-c{len(pairs)}", f"-d{max(1, round(duration))}s",
               "--timeout", "30s", "-s", str(self.script), url, "--", str(pairs_file),
               mode, str(uid_prefix)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("XWVM ")), None)
        if line is None:
            raise RuntimeError(f"wrk failed: {proc.stdout}\n{proc.stderr}")
        raw = json.loads(line[5:])
        uids: list[str] = []
        for f in self.tmp.glob(f"uids-{self.runs}.*"):
            uids += f.read_text().split()
        return Result(uids=uids, **raw)


class PythonGenerator:
    """asyncio, one keep-alive TLS connection per simulated worker, raw HTTP/1.1."""

    name = "python-asyncio"

    def __init__(self, tmp: Path) -> None:
        self.ctx = ssl.create_default_context()
        self.ctx.check_hostname = False
        self.ctx.verify_mode = ssl.CERT_NONE

    def run(self, url: str, mode: str, pairs: list[tuple[str, str]], duration: float
            ) -> Result:
        return asyncio.run(self._run(url, mode, pairs, duration))

    async def _run(self, url: str, mode: str, pairs: list[tuple[str, str]],
                   duration: float) -> Result:
        hostport = url.split("://", 1)[1].rstrip("/")
        host, port = hostport.rsplit(":", 1)
        lat: list[float] = []
        counts = {"ok": 0, "empty": 0, "other": 0, "socket_errors": 0}
        uids: list[str] = []
        start = time.perf_counter()
        deadline = start + duration

        async def one(token: str, host_uid: str) -> None:
            req = _request(mode, hostport, token, host_uid)
            conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
            while time.perf_counter() < deadline:
                try:
                    if conn is None:
                        conn = await asyncio.open_connection(host, int(port), ssl=self.ctx)
                    t0 = time.perf_counter()
                    status, body, close = await _exchange(*conn, req)
                    lat.append(time.perf_counter() - t0)
                except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
                    counts["socket_errors"] += 1
                    conn = None
                    continue
                if close:
                    conn[1].close()
                    conn = None
                _tally(mode, status, body, counts, uids)
            if conn is not None:
                conn[1].close()

        await asyncio.gather(*(one(t, h) for t, h in pairs))
        elapsed = time.perf_counter() - start
        lat.sort()
        return Result(requests=len(lat), duration_s=elapsed, p50_ms=pct(lat, 50) * 1e3,
                      p99_ms=pct(lat, 99) * 1e3, uids=uids, **counts)


def _request(mode: str, hostport: str, token: str, host_uid: str) -> bytes:
    """The one request a simulated worker repeats, as raw HTTP/1.1."""
    if mode == "work":
        return (f"POST /api/v1/hosts/{host_uid}/work HTTP/1.1\r\nHost: {hostport}\r\n"
                f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
                "Content-Length: 2\r\n\r\n{}").encode()
    if mode == "whoami":
        return (f"GET /api/v1/auth/whoami HTTP/1.1\r\nHost: {hostport}\r\n"
                f"Authorization: Bearer {token}\r\n\r\n").encode()
    return f"GET /api/v1/health HTTP/1.1\r\nHost: {hostport}\r\n\r\n".encode()


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    req: bytes) -> tuple[int, bytes, bool]:
    """Send ``req``; the answer's status, body and whether the server closes."""
    writer.write(req)
    head = await reader.readuntil(b"\r\n\r\n")
    status, length, close = int(head[9:12]), 0, False
    for h in head.split(b"\r\n")[1:]:
        k, _, v = h.partition(b":")
        k = k.strip().lower()
        if k == b"content-length":
            length = int(v)
        elif k == b"connection" and v.strip().lower() == b"close":
            close = True
    return status, await reader.readexactly(length), close


def _tally(mode: str, status: int, body: bytes, counts: dict[str, int],
           uids: list[str]) -> None:
    """Count one answer: an assignment (its uid kept), an empty queue or an error."""
    if status != 200:
        counts["other"] += 1
    elif mode != "work":
        counts["ok"] += 1
    else:
        answer = json.loads(body)
        if "work" in answer:
            counts["ok"] += 1
            uids.append(answer["work"]["uid"])
        elif "retry_after" in answer:
            counts["empty"] += 1
        else:
            counts["other"] += 1


def pct(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


# --- the grid under test ------------------------------------------------------------------

@dataclass
class Grid:
    app_uid: str
    app_name: str
    binary_uid: str
    owners: list[str]
    pairs: list[tuple[str, str]]  # (worker token, host uid), one per simulated worker
    worker_of_host: dict[str, str]


def prepare(server: ServerProcess, tmp: Path) -> Grid:
    """Over HTTP: an app (admin, rights 755), 4 standard users who each submit 2 jobs,
    16 public worker accounts and 64 hosts, each host logged in with its own token."""
    admin = server.client()
    binary = tmp / "bench-app.sh"
    binary.write_text("#!/bin/sh\necho hello\n")
    data = admin.upload_data(binary)
    app = admin.create_app("bench-app", {"linux/x86_64": data["uid"]})
    owners = []
    for i in range(N_USERS):
        login = f"bench-user-{i}"
        owners.append(admin.create_user(login, "bench-password-1", "standard")["uid"])
        user = server.client(login, "bench-password-1")
        for k in range(2):
            user.submit("bench-app", args=[str(k)])
    creds = [admin.enroll_worker(public=True) for _ in range(N_WORKER_ACCOUNTS)]

    def one_host(i: int) -> tuple[str, str, str]:
        cred = creds[i % len(creds)]
        c = server.client(cred["login"], cred["password"])
        host = c.register_host({"name": f"bench-host-{i}", **HOST_FACTS})
        return str(c.token), host["uid"], cred["login"]

    with ThreadPoolExecutor(4) as pool:
        rows = list(pool.map(one_host, range(MAX_SIMULATED)))
    return Grid(app_uid=app["uid"], app_name=app["name"], binary_uid=data["uid"],
                owners=owners, pairs=[(t, h) for t, h, _ in rows],
                worker_of_host={h: w for _, h, w in rows})


def top_up(db_url: str, grid: Grid, target: int) -> int:
    """Insert pending jobs (round-robin over the owners) until ``target`` are pending."""
    engine = make_engine(db_url)
    try:
        with Session(engine) as s:
            pending = s.scalar(select(func.count()).select_from(Work)
                               .where(Work.status == states.PENDING)) or 0
            missing = max(0, target - pending)
            now = dt.datetime.now(dt.UTC)
            for start in range(0, missing, 5000):
                works, links, evs = [], [], []
                for k in range(start, min(missing, start + 5000)):
                    uid, owner = str(uuid.uuid4()), grid.owners[k % len(grid.owners)]
                    works.append(dict(
                        uid=uid, app_uid=grid.app_uid, status=states.PENDING, args=[str(k)],
                        env={}, owner_uid=owner, group_uid=None, access_rights=0o755,
                        retries=0, max_retries=10, min_memory_mb=0, min_cpus=0,
                        min_disk_mb=0, submitted_at=now))
                    links.append(dict(work_uid=uid, data_uid=grid.binary_uid, role="app",
                                      name=grid.app_name))
                    evs.append(dict(at=now, kind="transition", object_uid=uid,
                                    actor_uid=owner, to_status=states.PENDING,
                                    detail=f"submitted ({grid.app_name})"))
                s.execute(insert(Work), works)
                s.execute(insert(WorkData), links)
                s.execute(insert(Event), evs)
                s.commit()
            if missing and engine.dialect.name == "postgresql":
                # Fresh statistics, as autovacuum would have within a minute: a bulk insert
                # the planner does not know about yet turns the scheduler's owner query into
                # a hash join over every pending job (see docs/benchmarks.md).
                s.execute(text("ANALYZE works, work_data, events, users"))
                s.commit()
            return missing
    finally:
        engine.dispose()


def count_running(db_url: str) -> int:
    engine = make_engine(db_url)
    try:
        with Session(engine) as s:
            return s.scalar(select(func.count()).select_from(Work)
                            .where(Work.status == states.RUNNING)) or 0
    finally:
        engine.dispose()


def verify(db_url: str, client_uids: list[str], client_count: int, in_flight: int
           ) -> tuple[bool, str]:
    engine = make_engine(db_url)
    try:
        with Session(engine) as s:
            running = set(s.scalars(select(Work.uid).where(Work.status == states.RUNNING)))
            moves = (select(Event.object_uid).where(Event.kind == "transition",
                                                    Event.to_status == states.RUNNING))
            n_moves = s.scalar(select(func.count()).select_from(moves.subquery())) or 0
            moved = set(s.scalars(moves))
            no_host = s.scalar(select(func.count()).select_from(Work).where(
                Work.status == states.RUNNING, Work.host_uid.is_(None))) or 0
    finally:
        engine.dispose()
    problems = []
    if n_moves != len(moved):
        problems.append(f"{n_moves - len(moved)} job(s) moved to RUNNING twice")
    if moved != running:
        problems.append(f"RUNNING jobs ({len(running)}) != jobs moved to RUNNING "
                        f"({len(moved)})")
    if len(set(client_uids)) != len(client_uids):
        problems.append(f"{len(client_uids) - len(set(client_uids))} uid(s) handed out twice")
    if not set(client_uids) <= running:
        problems.append("uid(s) received by the client are not RUNNING")
    if no_host:
        problems.append(f"{no_host} RUNNING job(s) without a host")
    extra = len(running) - client_count
    if not 0 <= extra <= in_flight:
        problems.append(f"server made {len(running)} assignments, client counted "
                        f"{client_count} (at most {in_flight} may be unread)")
    summary = (f"{len(running)} RUNNING = {len(moved)} jobs moved once each; client "
               f"counted {client_count} ({extra} unread in flight when the generator "
               f"stopped)")
    return not problems, "; ".join(problems) or summary


# --- in-process scheduler -----------------------------------------------------------------

def inprocess(db_url: str, grid: Grid, calls: int, threads: int, whole_request: bool,
              max_s: float) -> dict[str, float]:
    """``assign()`` + commit (or ``request_work()`` + commit), one session per call as in
    a request, ``threads`` threads in this process, each with its own host; at most
    ``calls`` calls or ``max_s`` seconds."""
    engine = make_engine(db_url)
    sessions = make_sessionmaker(engine)
    lat: list[float] = []
    lock = threading.Lock()
    got = [0]
    with sessions() as s:
        workers = {u.login: u for u in s.scalars(select(User))}
    hosts = [h for _, h in grid.pairs[:threads]]

    def loop(host_uid: str, n: int) -> None:
        p = _principal(workers[grid.worker_of_host[host_uid]])
        mine, ok = [], 0
        for _ in range(n):
            if time.perf_counter() > deadline:
                break
            with sessions() as s:
                took, assigned = _timed_call(s, p, host_uid, whole_request)
            mine.append(took)
            ok += assigned
        with lock:
            lat.extend(mine)
            got[0] += ok

    start = time.perf_counter()
    deadline = start + max_s
    per = max(1, calls // threads)
    ts = [threading.Thread(target=loop, args=(h, per)) for h in hosts]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    elapsed = time.perf_counter() - start
    engine.dispose()
    lat.sort()
    return {"calls": len(lat), "assigned": got[0], "rate": got[0] / elapsed,
            "p50_ms": pct(lat, 50) * 1e3, "p99_ms": pct(lat, 99) * 1e3}


def _principal(worker: User) -> Principal:
    return Principal(uid=worker.uid, login=worker.login, level=Level(worker.rights),
                     group_uid=worker.group_uid, confine_user_uid=worker.confine_user_uid,
                     confine_group_uid=worker.confine_group_uid)


def _timed_call(s: Session, p: Principal, host_uid: str, whole_request: bool
                ) -> tuple[float, bool]:
    """One scheduler call and its commit: (seconds, whether it assigned a job)."""
    if whole_request:
        t0 = time.perf_counter()
        job = host_service.request_work(s, p, host_uid, b"bench")
        answer = job.to_json() if job is not None else None  # what the API sends
    else:
        host = s.get(Host, host_uid)
        assert host is not None
        t0 = time.perf_counter()
        answer = assign(s, host, p)
    s.commit()
    return time.perf_counter() - t0, answer is not None


# --- driver -------------------------------------------------------------------------------

def machine() -> str:
    cpu = next((ln.split(":", 1)[1].strip() for ln in
                Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor() or "?")
    mem_kb = next(int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines()
                  if ln.startswith("MemTotal"))
    return (f"{os.cpu_count()} CPUs ({cpu}), {mem_kb / 1024**2:.0f} GiB RAM, "
            f"{platform.system()} {platform.release()}, Python {platform.python_version()}, "
            f"SQLite {sqlite3.sqlite_version}")


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def pg_version() -> str:
    from tests.support.postgres import _bin
    out = subprocess.run([str(_bin() / "postgres"), "--version"], capture_output=True,
                         text=True).stdout.strip()
    return out.replace("postgres (PostgreSQL) ", "PostgreSQL ")


Generator = WrkGenerator | PythonGenerator


@dataclass
class Options:
    duration: float
    levels: list[int]
    sizes: list[int]
    calls: int
    backends: list[str]
    generator: str


def options() -> Options:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="~1 minute: fewer levels, 2 s runs")
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--server-workers", default=None,
                    help="gunicorn processes to try, comma-separated (default 2,4; quick 2)")
    ap.add_argument("--concurrency", default=None,
                    help="simulated workers (default 1,4,16,64; quick 1,16,64)")
    ap.add_argument("--duration", type=float, default=None,
                    help="seconds per measurement (default 5; quick 2)")
    ap.add_argument("--inprocess-calls", type=int, default=None,
                    help="at most this many scheduler calls per in-process measurement, and at "
                    "most --duration seconds (default 3000; quick 800)")
    ap.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto")
    args = ap.parse_args()
    opts = Options(
        duration=args.duration or (2.0 if args.quick else 5.0),
        levels=[int(x) for x in
                (args.concurrency or ("1,16,64" if args.quick else "1,4,16,64")).split(",")],
        sizes=[int(x) for x in (args.server_workers or ("2" if args.quick else "2,4")).split(",")],
        calls=args.inprocess_calls or (800 if args.quick else 3000),
        backends=[b.strip() for b in args.backends.split(",")], generator=args.generator)
    if max(opts.levels) > MAX_SIMULATED:
        ap.error(f"at most {MAX_SIMULATED} simulated workers")
    if args.generator == "wrk" and not shutil.which("wrk"):
        ap.error("--generator wrk: wrk is not installed (apt-get install wrk)")
    return opts


def main() -> int:
    opts = options()
    tmp = Path(tempfile.mkdtemp(prefix="xwvm-bench-assign-"))
    os.chmod(tmp, 0o755)
    use_wrk = opts.generator == "wrk" or (opts.generator == "auto" and shutil.which("wrk"))
    gen: Generator = (WrkGenerator if use_wrk else PythonGenerator)(tmp)
    load0 = loadavg()
    print(f"# machine: {machine()}; load average {load0} (other work on the machine "
          "skews absolute numbers: compare the ratios)")
    print(f"# load generator: {gen.name} (on the same CPUs as the server); "
          f"{opts.duration:g} s per measurement; command: {' '.join(sys.argv)}")
    if not use_wrk:
        print("# note: wrk not found, using the Python generator, which costs the server "
              "more CPU (apt-get install wrk)")
    pg: PostgresServer | None = None
    rows: list[dict[str, Any]] = []
    inproc_rows: list[dict[str, Any]] = []
    ok_all = True
    t_start = time.monotonic()
    try:
        for backend in opts.backends:
            if backend.startswith("postgres") and pg is None:
                pg = PostgresServer(root=tmp / "pg").start()
                print(f"# {pg_version()} (fsync=off, synchronous_commit=off as in the tests)")
            last: tuple[str, Grid] | None = None
            for size in opts.sizes:
                good, last = bench_server(gen, backend, size, pg, tmp, opts, rows)
                ok_all &= good
            if last is not None:
                inproc_rows += bench_inprocess(backend, *last, opts)
    finally:
        if pg is not None:
            pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    summarize(rows, inproc_rows, load0, t_start, ok_all)
    return 0 if ok_all else 1


def bench_server(gen: Generator, backend: str, size: int, pg: PostgresServer | None,
                 tmp: Path, opts: Options, rows: list[dict[str, Any]]
                 ) -> tuple[bool, tuple[str, Grid]]:
    """One server (``size`` gunicorn processes) on ``backend``: every level measured into
    ``rows``, the health reference, then the correctness check."""
    root = tmp / f"{backend}-{size}"
    db_url = (pg.create_database(f"bench_{size}") if pg and backend != "sqlite"
              else f"sqlite:///{root / 'server' / 'xwvm.db'}")
    server = ServerProcess(root, db_url if backend != "sqlite" else None,
                           alive_period=3600, workers=size,
                           env={"XWVM_REAP_INTERVAL_S": "30", "XWVM_IDLE_RETRY_S": "1"})
    server.init().start()
    try:
        grid = prepare(server, tmp)
        client_uids: list[str] = []
        client_count = in_flight = 0
        for c in opts.levels:
            work, row = measure_level(gen, server.url, db_url, grid, c, opts.duration)
            row.update(backend=backend, procs=size)
            client_uids += work.uids
            client_count += work.ok
            in_flight += c if isinstance(gen, WrkGenerator) else 0
            rows.append(row)
            print(fmt_row(row), flush=True)
        c = max(opts.levels)
        health = gen.run(server.url, "health", grid.pairs[:c], opts.duration)
        print(f"  {backend} x{size}: GET /api/v1/health, {c} connections: "
              f"{health.rate:.0f}/s, p50 {health.p50_ms:.1f} ms, "
              f"p99 {health.p99_ms:.1f} ms", flush=True)
        rows[-1]["health_rate"] = health.rate
    finally:
        server.stop()
    good, msg = verify(db_url, client_uids, client_count, in_flight)
    print(f"  check {backend} x{size}: {'OK' if good else 'FAILED'}: {msg}", flush=True)
    return good, (db_url, grid)


def measure_level(gen: Generator, url: str, db_url: str, grid: Grid, c: int,
                  duration: float) -> tuple[Result, dict[str, Any]]:
    """``c`` simulated workers asking for work, then whoami as the reference."""
    pairs = grid.pairs[:c]
    top_up(db_url, grid, int(duration * 2500) + 2000)
    before = count_running(db_url)
    work = gen.run(url, "work", pairs, duration)
    after = count_running(db_url)
    ref = gen.run(url, "whoami", pairs, duration)
    row = dict(c=c, rate=work.rate, p50=work.p50_ms, p99=work.p99_ms, empty=work.empty,
               errors=work.other + work.socket_errors,
               server_rate=(after - before) / work.duration_s,
               ref_rate=ref.rate, ref_p50=ref.p50_ms, ref_p99=ref.p99_ms,
               ref_errors=ref.other + ref.socket_errors)
    return work, row


def bench_inprocess(backend: str, db_url: str, grid: Grid, opts: Options
                    ) -> list[dict[str, Any]]:
    """The scheduler without HTTP: 1 and 4 threads, assign() and the whole request_work()."""
    out = []
    for threads_n in (1, 4):
        for whole in (False, True):
            top_up(db_url, grid, opts.calls + 1000)
            r: dict[str, Any] = dict(inprocess(db_url, grid, opts.calls, threads_n, whole,
                                               opts.duration))
            r.update(backend=backend, threads=threads_n,
                     what="request_work()" if whole else "assign()")
            out.append(r)
            print(f"  in-process {backend} {r['what']:15} {threads_n} thread(s): "
                  f"{r['rate']:.0f}/s, p50 {r['p50_ms']:.2f} ms, "
                  f"p99 {r['p99_ms']:.2f} ms ({r['assigned']}/{r['calls']} "
                  "assigned)", flush=True)
    return out


def summarize(rows: list[dict[str, Any]], inproc_rows: list[dict[str, Any]], load0: str,
              t_start: float, ok_all: bool) -> None:
    print()
    print_tables(rows, inproc_rows)
    print(f"\nload average at the end: {loadavg()} (at the start: {load0})")
    print(f"total {time.monotonic() - t_start:.0f} s; correctness "
          f"{'OK' if ok_all else 'FAILED'}")
    best_pg = max((r["rate"] for r in rows if r["backend"] != "sqlite"), default=0.0)
    if best_pg:
        print(f"best PostgreSQL rate {best_pg:.0f}/s: goal {GOAL_PER_S:.0f}/s "
              f"{'met' if best_pg >= GOAL_PER_S else 'NOT met'} "
              f"({best_pg / BOINC_PER_S:.1f}x BOINC's ~{BOINC_PER_S:.0f}/s)")


def fmt_row(r: dict[str, Any]) -> str:
    flag = f" ({r['empty']} empty!)" if r["empty"] else ""
    flag += f" ({r['errors']} errors!)" if r["errors"] or r["ref_errors"] else ""
    return (f"| {r['backend']} | {r['procs']}x8 | {r['c']} | {r['rate']:.0f} | "
            f"{r['p50']:.1f} | {r['p99']:.1f} | {r['ref_rate']:.0f} | {r['ref_p50']:.1f} | "
            f"{r['ref_p99']:.1f} | {r['ref_rate'] / r['rate'] if r['rate'] else 0:.2f}x |"
            f"{flag}")


def print_tables(rows: list[dict[str, Any]], inproc: list[dict[str, Any]]) -> None:
    print("| backend | server procs x threads | simulated workers | assignments/s | "
          "p50 ms | p99 ms | whoami/s (ref) | ref p50 ms | ref p99 ms | "
          "cost vs ref |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(fmt_row(r))
    if inproc:
        print()
        print("| backend | call (+ commit) | threads | calls/s | p50 ms | p99 ms |")
        print("|---|---|---:|---:|---:|---:|")
        for r in inproc:
            print(f"| {r['backend']} | {r['what']} | {r['threads']} | {r['rate']:.0f} | "
                  f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} |")


if __name__ == "__main__":
    sys.exit(main())
