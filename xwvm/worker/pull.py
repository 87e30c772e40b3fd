"""The outer worker's pull loop: register, ask for work, run it, report; outbound
connections only. (The guest's agent is appliance/agent.py; this is not an agent.)"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from appliance import runner
from xwvm import signing
from xwvm.client.sdk import ApiError, Client, status_of
from xwvm.errors import XwvmError
from xwvm.ids import BadId, check_file_name, check_relative_name, check_uid
from xwvm.protocol import DEFAULT_WALL_CLOCK_S
from xwvm.protocol.calls import MalformedJob, WorkAnswer
from xwvm.protocol.messages import HostFacts, HypervisorProbe, JobDescription
from xwvm.protocol.retry import Backoff, retrying
from xwvm.protocol.vocab import HYPERVISORS, NATIVE_ENTRY, Fault, JobStatus
from xwvm.worker import facts, faults, sandbox
from xwvm.worker.apps import AppRefused, FileFilter, binary_filter
from xwvm.worker.cache import DEFAULT_QUOTA_BYTES, DataCache
from xwvm.worker.credential import Credential
from xwvm.worker.heartbeat import MIN_PERIOD_S, Heartbeat, clamp_period

log = logging.getLogger("xwvm.worker")
T = TypeVar("T")


def _failure_status(e: Exception) -> int | None:
    """For :func:`retrying` where the worker must hold on (asking for work, uploading
    results): a server error (any 5xx: a full blob disk answers 500), a timeout (408) or
    a throttle (429) reads as transient too. Definite refusals (400, 403, 404, 409,
    413...) are not retried."""
    status = status_of(e)
    if status is not None and (status >= 500 or status in (408, 429)):
        return 503  # Service Unavailable: what the one policy retries
    return status


def _refused_final(e: ApiError) -> bool:
    """Whether the server refused a final report for good in a way that an ERROR report
    can still end the job: no results (a guest that claimed it uploaded) or malformed."""
    return e.status == 400 or (e.status == 409 and e.code == "no_results")


def _nothing(_file: Any) -> bool:
    """The file filter of a job that places none of its app files."""
    return False


def effective_wall_clock(job_limit: Any, ceiling: int) -> int:
    """The job's wall-clock limit as this worker enforces it: the job's own when it is a
    positive number below the owner's ceiling, else the ceiling (a missing, zero or
    malformed limit never means "unlimited")."""
    if isinstance(job_limit, int) and not isinstance(job_limit, bool) and \
            0 < job_limit < ceiling:
        return job_limit
    return ceiling


@dataclass
class WorkerOptions:
    work_dir: Path
    name: str
    shared_apps: list[str] = field(default_factory=list)
    max_jobs: int | None = None
    max_idle: float | None = None
    max_backoff: float = 30.0
    upload_attempts: int = 3
    hypervisor: str = "auto"          # auto | libvirt | virtualbox | none
    trusted_keys: list[Path] = field(default_factory=list)
    image_quota_mb: int = 20 * 1024
    data_quota_mb: int = DEFAULT_QUOTA_BYTES // 2**20
    vm_hang_timeout_s: float = 600.0
    # Native jobs run on the host itself: only when the owner says so (--allow-native) or
    # started the worker for native jobs only (--hypervisor none).
    allow_native: bool = False
    # The owner's ceiling on any job's run time, enforced here whatever the job or the
    # server says: a job without a limit (or a longer one) gets this one.
    max_wall_clock_s: int = DEFAULT_WALL_CLOCK_S
    # Native binaries run only when a trusted key signed their app (worker/apps.py),
    # unless the owner opts out (--allow-unsigned-apps), as BOINC refuses unsigned code.
    allow_unsigned_apps: bool = False
    # The owner's ceilings on any one VM (None: facts.vm_ceilings' defaults, which leave
    # the host usable); a job needing more is not taken (--max-vm-memory/-cpus/-disk).
    max_vm_memory_mb: int | None = None
    max_vm_cpus: int | None = None
    max_vm_disk_mb: int | None = None
    vm_cpu_percent: int = 100
    # The work dir's disk must keep this much free for the worker to take a job; after a
    # job was given back for a full disk, no job for one poll period first.
    min_free_mb: int = 256
    disk_poll_s: float = 10.0

    @property
    def native_allowed(self) -> bool:
        return self.allow_native or self.hypervisor == "none"


class Worker:
    def __init__(self, cred: Credential, opts: WorkerOptions, server: str | None = None,
                 ca: str | None = None) -> None:
        self.cred, self.opts = cred, opts
        self.work_dir = Path(opts.work_dir).resolve()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        ca_path: str | None = ca
        if ca_path is None and cred.ca_pem:
            ca_file = self.work_dir / "server-ca.pem"
            ca_file.write_text(cred.ca_pem)
            ca_path = str(ca_file)
        self.client = Client(server or cred.server, ca_path)
        self.client.reauth = self._login
        self.cache = DataCache(self.work_dir / "cache", opts.data_quota_mb * 2**20)
        self.trusted_keys = signing.load_trusted(opts.trusted_keys)  # templates and apps
        if opts.native_allowed and not self.trusted_keys and not opts.allow_unsigned_apps:
            log.warning("no --trusted-key: native apps will be refused (unsigned)")
        self.stopping = threading.Event()  # SIGTERM / SIGINT
        self.job_stop = threading.Event()  # the running job must stop
        self.alive_period = 60.0
        self.host = ""
        self.current: str | None = None
        self.hypervisors: dict[str, HypervisorProbe] = {}
        self.vm_runner: Any = None
        # Native jobs run only in a sandbox that passed its self-test (see _isolation).
        self._native_sandbox: sandbox.Isolation | str | None = None
        self._disk_full: bool = False  # a job was given back for a full disk
        self._deadline = float("inf")  # the running job's wall clock ends (monotonic)

    # --- lifecycle ------------------------------------------------------------------------

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        self._retry(self._login, _failure_status)
        self._remove_leftovers()
        self._setup_hypervisor()
        self.host = self._retry(self._register, _failure_status)
        log.info("worker %s registered as host %s", self.opts.name, self.host)
        done, idle_since, delay = 0, time.monotonic(), 1.0
        while not self.stopping.is_set():
            self._sweep()
            if not self._wait_for_room():
                break
            # a server error (a 500) is waited out, as no answer is: the loop goes on
            raw = self._retry(lambda: self.client.request_work(self.host), _failure_status)
            if raw is None:
                break
            answer, ran = self._take(raw)
            if ran is None:
                if self.opts.max_idle and time.monotonic() - idle_since > self.opts.max_idle:
                    break
                retry_after = clamp_period(answer.retry_after, self.opts.max_backoff,
                                           max(self.opts.max_backoff, MIN_PERIOD_S))
                delay = min(max(delay * 2, 1.0), self.opts.max_backoff, retry_after)
                self.stopping.wait(delay * random.uniform(0.5, 1.0))
                continue
            delay = 0.0
            if not ran:
                # Refused without running: the server may send it again at once.
                delay = min(max(delay * 2, 1.0), self.opts.max_backoff)
                self.stopping.wait(delay)
                continue
            done += 1
            idle_since = time.monotonic()
            if self.opts.max_jobs and done >= self.opts.max_jobs:
                break
        try:  # a clean stop: the server shows the host "stopped", not lost
            self.client.goodbye(self.host)
        except XwvmError as e:
            log.warning("could not tell the server this worker stops: %s", e.message)
        return done

    def _sweep(self) -> None:
        """Between jobs: remove whatever a job left (a VM whose destroy failed while the
        hypervisor was away, a file), so nothing outlives its job."""
        if self.vm_runner is None:
            return
        try:
            for uid in self.vm_runner.sweep():
                log.info("removed what job %s left behind", uid)
        except (XwvmError, OSError) as e:
            log.warning("could not remove what earlier jobs left (next round retries): %s",
                        getattr(e, "message", e))

    def _wait_for_room(self) -> bool:
        """Take no job while the work dir's disk is short of room (below --min-free-disk),
        nor for one poll period after a job was given back for a full disk (the server's
        circuit breaker pauses a host whose disk keeps filling). False if the worker is
        asked to stop meanwhile."""
        need = self.opts.min_free_mb
        if self._disk_full:
            self._disk_full = False
            log.warning("a job was given back for a full disk: no job for %.0f s",
                        self.opts.disk_poll_s)
            if self.stopping.wait(self.opts.disk_poll_s):
                return False
        logged = False
        while not self.stopping.is_set():
            free = shutil.disk_usage(self.work_dir).free // 2**20
            if free >= need:
                if logged:
                    log.info("disk space is back (%d MiB free): taking jobs again", free)
                return True
            if not logged:
                log.warning("paused: %d MiB free in %s, %d MiB needed; taking no job until "
                            "space returns", free, self.work_dir, need)
                logged = True
            self.stopping.wait(self.opts.disk_poll_s)
        return False

    def _take(self, raw: Any) -> tuple[WorkAnswer, bool | None]:
        """The server's answer to a work request, read once, and its job run: (the answer,
        None when it holds no job, else what :meth:`run_job` said)."""
        try:
            answer = WorkAnswer.from_json(raw)
        except MalformedJob as e:
            return WorkAnswer(), self._refuse_malformed(e)
        except ValueError as e:  # not an object at all: as if no job were waiting
            log.warning("the server's answer to a work request is malformed: %s", e)
            return WorkAnswer(), None
        if answer.work is None:
            return answer, None
        self.alive_period = clamp_period(answer.alive_period, self.alive_period)
        return answer, self.run_job(answer.work)

    def _refuse_malformed(self, e: MalformedJob) -> bool:
        """A job whose description does not read: reported as refused when its id is one
        (the id is also the report's URL), else only logged."""
        try:
            uid = check_uid(e.uid, "job")
        except BadId as bad:
            log.warning("%s", bad.message)
            return False
        log.warning("job %s refused: %s", uid, e)
        self._report(uid, JobStatus.ERROR, message=f"refused by this worker: the job's "
                                                   f"description is malformed ({e})")
        return True

    def _on_signal(self, signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping; the running job is given back", signum)
        self.stopping.set()
        self.job_stop.set()

    def _login(self) -> str:
        self.client.token = None
        return self.cred.login_with(self.client)

    def _register(self) -> str:
        state = self.work_dir / "host.json"
        facts_now = dataclasses.replace(
            facts.collect(self.work_dir, self.opts.name, self.opts.shared_apps),
            hypervisors={**self.hypervisors, NATIVE_ENTRY: self._native_entry()},
            templates_held=tuple(self.templates_held()))
        known = json.loads(state.read_text()) if state.is_file() else {}
        if known.get("server") == self.client.server and known.get("uid"):
            try:
                return self._register_as(dataclasses.replace(facts_now, uid=known["uid"]))
            except ApiError as e:
                if e.status not in (403, 404):
                    raise
        uid = self._register_as(facts_now)
        state.write_text(json.dumps({"server": self.client.server, "uid": uid}))
        return uid

    def _register_as(self, host: HostFacts) -> str:
        answer = self.client.register_host(host.to_json())
        return check_uid(answer.get("uid") if isinstance(answer, dict) else None, "host")

    def _native_entry(self) -> HypervisorProbe:
        problem = None
        if self.opts.native_allowed:
            iso = self._isolation()
            problem = iso if isinstance(iso, str) else None
        return facts.native_entry(self.opts.native_allowed, problem, self.trusted_keys,
                                  self.opts.allow_unsigned_apps)

    def _isolation(self) -> sandbox.Isolation | str:
        """The native-job sandbox, self-tested once; a string says why there is none."""
        if self._native_sandbox is None:
            try:
                self._native_sandbox = sandbox.host_isolation()
            except (sandbox.SandboxUnavailable, OSError, subprocess.SubprocessError) as e:
                self._native_sandbox = str(e)
                log.warning("native jobs refused: %s", e)
        return self._native_sandbox

    def _sandboxed(self) -> sandbox.Isolation:
        """The native-job sandbox, once :meth:`_native_refusal` found there is one."""
        isolation = self._isolation()
        if isinstance(isolation, str):
            raise XwvmError(f"no sandbox for native jobs: {isolation}", code="no_sandbox")
        return isolation

    def worker_id(self) -> str:
        """A stable id for this work dir: VMs and files are tagged with it, so a restarted
        worker finds what a crashed run left behind."""
        path = self.work_dir / "worker-id"
        if not path.is_file():
            path.write_text(f"w{uuid.uuid4().hex[:12]}")
        return path.read_text().strip()

    def _setup_hypervisor(self) -> None:
        """Probe the hypervisor (a tiny guest, see the driver) and clean what a previous run
        left; the result goes into the host record, usable or not, with the reason."""
        if self.opts.hypervisor == "none":
            return
        # auto: libvirt if usable, else VirtualBox if usable; each one's probe is reported.
        kinds = list(HYPERVISORS) if self.opts.hypervisor == "auto" \
            else [self.opts.hypervisor]
        self.hypervisors = {}
        for kind in kinds:
            driver = self._probe(kind)
            if driver is not None:
                break
        else:
            if not self.opts.native_allowed:
                reasons = "; ".join(f"{k}: {v.reason}" for k, v in self.hypervisors.items())
                raise XwvmError(f"no usable hypervisor ({reasons}); this worker runs VM jobs "
                                "only: give --allow-native to run native jobs on this host",
                                code="no_hypervisor")
            return
        for uid in driver.cleanup_leftovers():
            log.info("removed VM of job %s left by a previous run", uid)
        self.vm_runner = self._vm_runner(driver)

    def _probe(self, kind: str) -> Any:
        """Probe one hypervisor and record what it found; its driver if usable. The one
        the owner named (--hypervisor KIND) must be usable."""
        from xwvm.worker.drivers import make_driver
        named = self.opts.hypervisor == kind
        try:
            driver = make_driver(kind, self.worker_id(), self.work_dir)
            probe = driver.probe()
        except (XwvmError, ImportError) as e:
            reason = e.message if isinstance(e, XwvmError) else f"{kind} API missing: {e}"
            self.hypervisors[kind] = HypervisorProbe(usable=False, reason=reason)
            if named:
                raise XwvmError(f"--hypervisor {kind}: {reason}", code="no_hypervisor") \
                    from None
            return None
        log.info("%s: %s", kind, probe.reason)
        self.hypervisors[kind] = probe
        if not probe.usable:
            if named:
                raise XwvmError(f"--hypervisor {kind}: {kind} is unusable on this host: "
                                f"{probe.reason}", code="no_hypervisor")
            return None
        # The scheduler sends only VM jobs whose network policy this host enforces, of
        # templates a key it trusts signed.
        networks = tuple(driver.networks())
        entry = facts.vm_entry(dataclasses.replace(probe, networks=networks,
                                                   limits=self.vm_ceilings()),
                               self.trusted_keys)
        self.hypervisors[kind] = entry
        if not entry.usable:
            log.warning("%s: %s", kind, entry.reason)
            if named and not self.opts.native_allowed:
                raise XwvmError(f"--hypervisor {kind}: {entry.reason}", code="no_hypervisor")
            return None
        log.info("%s enforces network policies: %s", kind, ", ".join(map(str, networks)))
        return driver

    def _vm_runner(self, driver: Any) -> Any:
        from xwvm.worker import images
        from xwvm.worker.vmjob import VMJobRunner, VMOptions
        keys = signing.load_trusted(self.opts.trusted_keys)
        cache = images.ImageCache(self.work_dir / "images",
                                  quota_bytes=self.opts.image_quota_mb * 2**20,
                                  trusted_keys=keys)
        return VMJobRunner(
            driver, cache, self.client,
            VMOptions(worker_id=self.worker_id(), work_dir=self.work_dir,
                      server_url=self.client.server,
                      ca_pem=Path(self.client.verify).read_text()
                      if isinstance(self.client.verify, str) else "",
                      hang_timeout_s=self.opts.vm_hang_timeout_s,
                      ceilings=self.vm_ceilings()),
            verify=lambda tpl: images.verify(tpl, keys), upload=self._upload, data=self.cache)

    def vm_ceilings(self) -> facts.VMCeilings:
        """The most any one VM gets here: the owner's options, else safe defaults."""
        o = self.opts
        return facts.vm_ceilings(self.work_dir, o.max_vm_memory_mb, o.max_vm_cpus,
                                 o.max_vm_disk_mb, o.vm_cpu_percent)

    def templates_held(self) -> list[str]:
        """Templates fully in the image cache (the scheduler prefers their jobs here)."""
        return self.vm_runner.images.holdings() if self.vm_runner is not None else []

    def _remove_leftovers(self) -> None:
        """A previous run that crashed may have left sandboxes and partial downloads."""
        jobs = self.work_dir / "jobs"
        if jobs.exists():
            for leftover in jobs.iterdir():
                log.info("removing leftover %s", leftover)
                shutil.rmtree(leftover, ignore_errors=True)
        for part in self.cache.remove_partials():
            log.info("removed partial download %s", part.name)

    def _retry(self, fn: Callable[[], T],
               status: Callable[[Exception], int | None] = status_of) -> T | None:
        """Call ``fn`` until it succeeds, backing off while the server is unreachable (or
        failing, with ``status`` :func:`_failure_status`); None if the worker is asked to
        stop meanwhile."""
        def on_retry(e: Exception, delay: float) -> None:
            log.warning("server unavailable (%s); retrying in %.1f s",
                        getattr(e, "message", e), delay)
        return retrying(fn, status, Backoff(first=0.5, cap=self.opts.max_backoff,
                                            attempts=None),
                        sleep=self.stopping.wait, on_retry=on_retry)

    # --- one job ----------------------------------------------------------------------------

    def run_job(self, desc: JobDescription) -> bool:
        """Run one job; False if it was refused unrun (an id that is not one: nothing is
        reported, since the id is also the report's URL)."""
        try:
            uid = check_uid(desc.uid, "job")
        except BadId as e:
            log.warning("%s", e.message)
            return False
        self.current = uid
        self.job_stop.clear()
        if self.stopping.is_set():
            self.job_stop.set()
        jobs = self.work_dir / "jobs"  # no local user reaches a job's files through here
        jobs.mkdir(mode=0o700, parents=True, exist_ok=True)
        jobs.chmod(0o700)
        sandbox = runner.Sandbox(jobs / uid)

        def on_stop(stopped: str) -> None:
            if stopped == uid:
                log.info("server says job %s is no longer ours: stopping it", uid)
                self.job_stop.set()

        try:
            with Heartbeat(self.client, self.host, self.alive_period,
                           lambda: [uid] if self.current else [], on_stop,
                           self.templates_held):
                self._execute(desc, sandbox)
        finally:
            self.current = None
            sandbox.remove()
            # Its inputs may be private to the job's owner: not kept for later jobs.
            self.cache.forget(desc.files)
        return True

    def _execute(self, desc: JobDescription, sandbox: runner.Sandbox) -> None:
        # One hard limit for VM and native jobs alike, enforced by the code below (the VM
        # monitor or the native runner), and told to the guest through its context.
        desc = dataclasses.replace(desc, wall_clock_s=effective_wall_clock(
            desc.wall_clock_s, self.opts.max_wall_clock_s))
        self._deadline = time.monotonic() + desc.wall_clock_s
        if desc.vm is not None:
            self._execute_vm(desc)
            return
        refusal, accept = self._native_refusal(desc)
        if refusal is not None:
            self._report(desc.uid, JobStatus.ERROR, message=refusal)
            return
        faults.step("download", desc.uid, self.work_dir)
        try:
            sandbox.create()
            program, stdin, placed = self._prepare(desc, sandbox, accept)
        except (XwvmError, OSError) as e:
            self._fail(desc.uid, e, "could not fetch the job's files")
            return
        faults.step("running", desc.uid, self.work_dir)
        self._run_native(desc, sandbox, program, stdin, placed)

    def _native_refusal(self, desc: JobDescription) -> tuple[str | None, FileFilter]:
        """Why this host does not run the native job (None: it does), and which of its
        ``app`` files may be placed as its program; checked before a byte is fetched."""
        if not self.opts.native_allowed:  # the server should not have sent it
            return ("this worker runs VM jobs only: a native job would run on the host "
                    "itself"), _nothing
        isolation = self._isolation()
        if isinstance(isolation, str):
            return f"this worker cannot sandbox native jobs: {isolation}", _nothing
        try:  # the program must be one this host may run
            return None, binary_filter(desc, self.trusted_keys,
                                       shared_apps=self.opts.shared_apps,
                                       allow_unsigned=self.opts.allow_unsigned_apps)
        except AppRefused as e:
            return f"refused by this worker: {e.message}", _nothing

    def _run_native(self, desc: JobDescription, sandbox: runner.Sandbox, program: Path,
                    stdin: Path | None, placed: dict[str, float]) -> None:
        isolation = self._sandboxed()
        args = list(desc.args)
        if desc.command:  # a shared app this host provides: run the job's command
            args = ["-c", f'{desc.command} "$@"', "xwvm-payload", *args]
        outcome = runner.run(runner.Command(args, desc.env, desc.wall_clock_s), sandbox,
                             program, stdin, self.job_stop, isolation)
        if outcome.stopped and self.stopping.is_set():
            self._give_back(desc.uid, Fault.STOPPING, "worker stopping: job given back")
            return
        if outcome.reason == runner.STOPPED:
            return  # the server took the job away; there is nobody to report to
        faults.step("upload", desc.uid, self.work_dir)
        try:
            with tempfile.TemporaryDirectory(dir=self.work_dir) as tmp:
                archive = runner.pack_results(
                    sandbox, placed, Path(tmp) / "results.tar.gz",
                    isolation.account.uid if isolation.account else None)
                if not self._upload(desc.uid, archive, outcome.exit_code):
                    return
        except (XwvmError, OSError) as e:  # a full disk while packing is the host's
            self._fail(desc.uid, e, "could not pack the job's results")
            return
        if outcome.stopped:
            self._report(desc.uid, JobStatus.ERROR, outcome.exit_code, outcome.reason)
        else:
            self._report(desc.uid, JobStatus.COMPLETED, outcome.exit_code)

    def _execute_vm(self, desc: JobDescription) -> None:
        if self.vm_runner is None:
            self._report(desc.uid, JobStatus.ERROR,
                         message="this worker has no usable hypervisor")
            return
        try:
            outcome = self.vm_runner.run(desc, self.job_stop, self.stopping)
        except (XwvmError, OSError) as e:
            self._fail(desc.uid, e, "VM job failed on the worker")
            return
        except Exception as e:  # a job that crashed a worker would go on to crash the next
            log.exception("VM job %s failed on the worker", desc.uid)
            self._give_back(desc.uid, Fault.HOST,
                            f"VM job failed on the worker ({type(e).__name__})")
            return
        if outcome.fault is not None:
            self._give_back(desc.uid, outcome.fault, outcome.message)
        elif outcome.status:
            self._report(desc.uid, outcome.status, outcome.exit_code, outcome.message or None)

    def _fail(self, uid: str, e: Exception, what: str) -> None:
        """A job that failed with ``e``: given back for an infrastructure fault (the one
        rule: faults.classify), else ended in ERROR with the reason."""
        message = getattr(e, "message", None) or str(e)
        fault = Fault.STOPPING if self.stopping.is_set() else faults.classify(e)
        if fault is None:
            self._report(uid, JobStatus.ERROR, message=f"{what}: {message}")
        else:
            self._give_back(uid, fault, f"{what}: {message}")

    def _give_back(self, uid: str, fault: Fault, message: str) -> None:
        """Give the job back for an infrastructure fault: the server counts the retry and
        this host's fault streak; a full disk also pauses this worker until space returns."""
        log.warning("job %s given back (%s): %s", uid, fault, message)
        if fault == Fault.DISK_FULL:
            self._disk_full = True
        self._report(uid, JobStatus.PENDING, message=message, fault=fault)

    def _prepare(self, desc: JobDescription, sandbox: runner.Sandbox,
                 accept: FileFilter) -> tuple[Path, Path | None, dict[str, float]]:
        program: Path | None = None
        stdin: Path | None = None
        placed: dict[str, float] = {}
        for f in desc.files:
            if f.role == "app" and not accept(f):
                continue  # another platform's binary, or a binary nobody signed
            cached = self.cache.job_file(self.client, f)
            if f.role == "stdin":
                stdin = cached
                continue
            executable = f.role == "app"
            name = check_file_name(desc.app, "app") if executable \
                else check_relative_name(f.name, "input")
            if name in placed or name.split("/")[0] == runner.TMP_NAME:
                # one file must not replace another (an input over the signed program)
                raise XwvmError("two of the job's files have the same name, or one is "
                                "named like the job's /tmp folder", code="bad_job_files")
            dest = sandbox.place(cached, name, executable=executable)
            placed[name] = dest.stat().st_mtime
            if executable:
                program = dest
        if program is None and desc.command:
            program = Path("/bin/sh")
        if program is None:
            raise XwvmError(f"app {desc.app} has no binary for this host",
                            code="no_binary")
        return program, stdin, placed

    def _upload(self, uid: str, archive: Path, exit_code: int | None) -> bool:
        """Upload the results, retrying failures (no answer, any 5xx such as a full blob
        store's 507, 408, 429) until it works, the worker stops or the job's wall clock
        ends (then the job is given back, fault server); after a few, tell the server
        (RESULTREQUEST). False when the results were not taken: the job is no longer this
        worker's, or the server refused them for good (a 400, 409, 413...: the job's error
        says why)."""
        failures, told = 0, False

        def put() -> bool:
            self.client.upload_result(uid, archive)
            return True

        def on_retry(e: Exception, delay: float) -> None:
            nonlocal failures, told
            failures += 1
            message = getattr(e, "message", str(e))
            log.warning("result upload of %s failed (%s), attempt %d; retrying in %.1f s",
                        uid, message, failures, delay)
            if failures >= self.opts.upload_attempts and not told:
                told = self._report(uid, JobStatus.RESULTREQUEST, exit_code,
                                    f"result upload failed: {message}")

        def wait(delay: float) -> bool:  # True: stop trying
            left = self._deadline - time.monotonic()
            if left <= 0:
                log.warning("results of job %s not delivered: the server did not take them "
                            "before the job's wall clock ended", uid)
                return True
            return self.stopping.wait(min(delay, left))

        try:
            backoff = Backoff(first=min(1.0, self.opts.max_backoff),
                              cap=self.opts.max_backoff, attempts=None)
            if retrying(put, _failure_status, backoff, sleep=wait, on_retry=on_retry):
                return True
        except ApiError as e:
            if e.code == "not_active" or e.status in (403, 404):
                return False
            log.warning("result upload of %s refused: %s", uid, e.message)
            self._report(uid, JobStatus.ERROR, exit_code,
                         f"the server refused the job's results: {e.message}")
            return False
        if not self.stopping.is_set():  # the wall clock ended with the results undelivered
            self._give_back_once(uid, Fault.SERVER, "the server did not take the results "
                                                    "before the job's wall clock ended")
        return False

    def _give_back_once(self, uid: str, fault: Fault, message: str) -> None:
        """Give the job back, waiting for a server that is away (its sweep does not count
        its own downtime against the job: reaper.forgive_outage); a refusal (the job moved
        on meanwhile) is only logged."""
        log.warning("job %s given back (%s): %s", uid, fault, message)
        try:
            self._retry(lambda: self.client.report(uid, JobStatus.PENDING, message=message,
                                                   fault=fault))
        except XwvmError as e:
            log.warning("the give-back of job %s was not taken: %s", uid, e.message)

    def _report(self, uid: str, status: JobStatus, exit_code: int | None = None,
                message: str | None = None, fault: Fault | None = None) -> bool:
        """Report ``status``; a final report the server refuses for good (no results to
        complete with, or malformed) is followed by an ERROR saying why, once, so the job
        ends now rather than at the reaper's wall clock. False when nothing was taken."""
        try:
            self._retry(lambda: self.client.report(uid, status, exit_code, message, fault))
            return True
        except ApiError as e:
            log.warning("report %s for %s refused: %s", status, uid, e.message)
            if status not in (JobStatus.COMPLETED, JobStatus.ERROR) or not _refused_final(e):
                return False
            error = e
        reason = f"the server refused the report {status}: {error.message}"
        kept = exit_code if error.status == 409 else None  # a 400 may be the exit code's
        try:
            self._retry(lambda: self.client.report(
                uid, JobStatus.ERROR, kept, f"{reason}; {message}" if message else reason))
            return True
        except ApiError as e:
            log.warning("report ERROR for %s refused too: %s", uid, e.message)
            return False
