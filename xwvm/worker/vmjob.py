"""One VM job on the outer worker, above any hypervisor driver.

Template (verified, cached) → overlay → context ISO → define → start → monitor → destroy.
The lifecycle, wall-clock limit and hang detection are written once here; drivers only
create, run and remove VMs. Every VM gets an exchange disk (xwvm.protocol.exchange): the
guest leaves its verdict there (the payload's exit code, or why it could not run), which
this side reads once the VM is off and reports as the job's final status. The nested
worker inside the VM uploads the results with its delegated credential; a network=none
job has no NIC and no credential: its inputs go in and its results come back on the
exchange disk too, and this side uploads them. Hang detection watches the console, where
the guest writes its progress beats.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from contextualizer import (
    InputRef,
    JobSpec,
    Limits,
    Mode,
    Payload,
    build_job_context,
    write_iso,
)
from contextualizer.errors import ContextError
from xwvm.client.sdk import Client
from xwvm.errors import XwvmError
from xwvm.ids import check_relative_name, check_uid
from xwvm.protocol import exchange, vocab
from xwvm.protocol.messages import JobDescription, TemplateArtifact, TemplateDescription, VMPart
from xwvm.protocol.vocab import (
    DEFAULT_PILOT_IDLE_S,
    DEFAULT_WALL_CLOCK_S,
    GUEST_SERVER_NAME,
    Fault,
    JobStatus,
)
from xwvm.worker import faults
from xwvm.worker.cache import DataCache
from xwvm.worker.drivers.base import Driver, VMSpec, VMState
from xwvm.worker.drivers.console import CONSOLE_MAX_BYTES
from xwvm.worker.facts import MIN_VM_MEMORY_MB, VMCeilings
from xwvm.worker.images import select_artifacts

log = logging.getLogger("xwvm.worker.vm")
STOP_GRACE_S = 5.0
# A VM its hypervisor paused (QEMU stops a guest whose disk write met a full host disk)
# this long is stopped and its job given back.
PAUSED_S = 5.0
LOW_DISK_BYTES = 64 * 2**20


class TooBig(XwvmError):
    """A job that needs more than the owner lets any VM have here."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="vm_too_big")


class ContextRefused(XwvmError):
    """The contextualizer refused the job's context (a user's or server's mistake)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="context_refused")


def _count(value: Any) -> int:
    """A server-sent size or count: a non-negative int, else 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _vm(job: JobDescription) -> VMPart:
    assert job.vm is not None, "run() refuses a job without its VM part"
    return job.vm


class ImageSource(Protocol):
    def holdings(self) -> list[str]: ...

    def use(self, client: Client, desc: TemplateDescription,
            disk_formats: Collection[str] | None = None
            ) -> contextlib.AbstractContextManager[dict[str, Path]]: ...


# Uploads a job's results archive; False when the job is no longer this worker's.
Uploader = Callable[[str, Path, "int | None"], bool]


@dataclass
class VMOutcome:
    status: JobStatus | None  # COMPLETED | ERROR | PENDING (give back) | None (taken away)
    exit_code: int | None = None
    message: str = ""
    fault: Fault | None = None  # why it is given back (PENDING)


def _failed(e: XwvmError, what: str) -> VMOutcome:
    """The outcome of a step that raised: given back for an infrastructure fault (the
    retry counts, not against the user), else the job's own error."""
    fault = faults.classify(e)
    if fault is not None:
        log.warning("%s (%s fault): given back: %s", what, fault, e.message)
        return VMOutcome(JobStatus.PENDING, message=f"{what}: {e.message}", fault=fault)
    return VMOutcome(JobStatus.ERROR, message=f"{what}: {e.message}")


@dataclass
class VMOptions:
    worker_id: str
    work_dir: Path
    server_url: str
    ca_pem: str
    hang_timeout_s: float = 600.0
    poll_s: float = 0.5
    results_capacity_mb: int = exchange.DEFAULT_RESULTS_CAPACITY // 2**20  # network=none
    # The owner's ceilings on this VM (None: the job's minimums alone, for tests of the
    # runner; the worker always passes its own).
    ceilings: VMCeilings | None = None


class VMJobRunner:
    def __init__(self, driver: Driver, images: ImageSource, client: Client,
                 opts: VMOptions, verify: Callable[[TemplateDescription], None],
                 upload: Uploader | None = None, data: DataCache | None = None) -> None:
        self.driver, self.images, self.client, self.opts = driver, images, client, opts
        self.verify = verify
        self.upload: Uploader = upload or self._upload_once
        # network=none inputs come through the worker's own data cache (native jobs' too)
        self.data = data or DataCache(Path(opts.work_dir) / "cache")
        self.vm_dir = Path(opts.work_dir) / "vm"
        self.vm_dir.mkdir(parents=True, exist_ok=True)

    def run(self, job: JobDescription, stop: threading.Event,
            shutting_down: threading.Event) -> VMOutcome:
        if job.vm is None:
            return VMOutcome(JobStatus.ERROR,
                             message="not a VM job: its description has no template")
        template = job.vm.template
        try:
            uid = check_uid(job.uid, "job")
            check_uid(template.uid, "template")
            for f in job.files:
                check_relative_name(f.name, "input")
            self.verify(template)
            # Before a byte is fetched: the scheduler should not have sent a job bigger
            # than the host record's ceilings; given back, never run bigger than allowed.
            self._size(job, select_artifacts(template, self.driver.disk_formats)[0])
        except TooBig as e:  # a host that advertises ceilings it does not honour is faulty
            return VMOutcome(JobStatus.PENDING, message=f"given back: {e.message}",
                             fault=Fault.HOST)
        except XwvmError as e:
            if e.code == "untrusted_signature":  # another worker may trust its signer
                return VMOutcome(JobStatus.PENDING, fault=Fault.REFUSED,
                                 message=f"given back: template refused: {e.message}")
            return VMOutcome(JobStatus.ERROR, message=f"template refused: {e.message}")
        with contextlib.ExitStack() as stack:
            try:
                state, disk, console = self._boot_and_watch(job, stack, stop)
            except ContextRefused as e:
                return VMOutcome(JobStatus.ERROR, message=e.message)
            except XwvmError as e:
                return _failed(e, "could not run the VM")
            except OSError as e:
                return _failed(faults.InfrastructureFault(
                    str(e), faults.Fault.DISK_FULL if faults.is_disk_full(e) else None),
                    "could not run the VM")
            if stop.is_set():
                if shutting_down.is_set():
                    return VMOutcome(JobStatus.PENDING, fault=Fault.STOPPING,
                                     message="worker stopping: VM job given back")
                return VMOutcome(None, message="taken away by the server")
            if state == "off":
                faults.step("upload", uid, self.opts.work_dir)
                return self._verdict(job, disk, console)
            return self._stopped(job, state, console)

    def _boot_and_watch(self, job: JobDescription, stack: contextlib.ExitStack,
                        stop: threading.Event) -> tuple[str, Path, str]:
        """Every step from the template to the VM's end: (how it ended, its exchange disk,
        its console). What it made is removed when ``stack`` closes, whatever happened."""
        uid, work_dir = job.uid, self.opts.work_dir
        faults.step("download", uid, work_dir)
        paths = stack.enter_context(
            self.images.use(self.client, _vm(job).template, self.driver.disk_formats))
        faults.step("overlay", uid, work_dir)
        disk = stack.enter_context(self._exchange(job))
        spec = self._spec(job, paths, disk)
        self._context_iso(job, spec)
        with self._vm(spec):
            state = self._monitor(job, stop)
            console = self._console(uid)
        return state, disk, console

    def _upload_once(self, uid: str, archive: Path, exit_code: int | None) -> bool:
        self.client.upload_result(uid, archive)
        return True

    # --- steps --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _exchange(self, job: JobDescription) -> Iterator[Path]:
        """The VM's exchange disk, for the guest's verdict; network=none: also the job's
        inputs, fetched here, and room for its results."""
        uid = job.uid
        disk = (self.vm_dir / f"{uid}-exchange.img").resolve()
        try:
            if _vm(job).network == vocab.NetworkPolicy.NONE:
                with self.data.holding():
                    inputs = [(f.name, self.data.job_file(self.client, f), f.sha256)
                              for f in job.files if f.role == "input"]
                exchange.create(disk, uid, inputs, self.opts.results_capacity_mb * 2**20)
            else:  # the nested worker fetches and uploads: only the verdict comes here
                exchange.create(disk, uid, [], results_capacity=0)
            yield disk
        finally:
            disk.unlink(missing_ok=True)

    def _size(self, job: JobDescription, disk: TemplateArtifact) -> tuple[int, int, int, int]:
        """(memory MiB, vCPUs, disk cap MiB, CPU percent): the job's and template's minimums,
        within the owner's ceilings; TooBig when they need more than those."""
        tpl = _vm(job).template
        memory = max(_count(job.min_memory_mb), _count(tpl.min_memory_mb))
        cpus = max(_count(job.min_cpus), _count(tpl.min_cpus), 1)
        disk_mb = _count(job.min_disk_mb)
        # A template's own disk size counts too: the guest may fill all of it.
        template_mb = -(-_count(disk.virtual_size) // 2**20)
        c = self.opts.ceilings
        if c is None:
            return max(memory, MIN_VM_MEMORY_MB), cpus, disk_mb, 100
        over = [f"{what} {need} > {most}" for what, need, most in (
            ("memory MiB", memory, c.memory_mb), ("CPUs", cpus, c.cpus),
            ("disk MiB", max(disk_mb, template_mb), c.disk_mb)) if need > most]
        if over:
            raise TooBig("the job needs more than this worker's VM ceilings ("
                         + ", ".join(over) + ")")
        return min(max(memory, MIN_VM_MEMORY_MB), c.memory_mb), cpus, disk_mb, c.cpu_percent

    def _spec(self, job: JobDescription, paths: dict[str, Path],
              exchange_disk: Path | None = None) -> VMSpec:
        vm = _vm(job)
        # the disk use() chose
        disk = select_artifacts(vm.template, self.driver.disk_formats)[0]
        server = urlsplit(self.opts.server_url)
        memory, vcpus, disk_mb, cpu_percent = self._size(job, disk)
        return VMSpec(job_uid=job.uid, worker_id=self.opts.worker_id,
                      base_image=paths["disk"].resolve(), base_format=disk.format,
                      vcpus=vcpus, memory_mb=memory, cpu_quota_percent=cpu_percent,
                      disk_cap_mb=disk_mb,
                      context_iso=(self.vm_dir / f"{job.uid}-context.iso").resolve(),
                      exchange_disk=exchange_disk,
                      kernel=paths.get("kernel"), initrd=paths.get("initrd"),
                      cmdline=vm.template.cmdline or None, network=vm.network,
                      server_endpoint=(server.hostname or "127.0.0.1",
                                       server.port or 443))

    def _context_iso(self, job: JobDescription, spec: VMSpec) -> None:
        """The VM's context ISO; ContextRefused when the contextualizer refuses the job's
        context document or the job's side of it (its owner, command, credential...)."""
        assert spec.context_iso is not None
        try:
            ctx = build_job_context(_vm(job).context or {}, self._job_spec(job, spec))
            write_iso(ctx, spec.context_iso)
        except (ContextError, ValueError) as e:  # neither is an XwvmError
            raise ContextRefused(f"the job's context was refused: {e}") from None

    def _job_spec(self, job: JobDescription, spec: VMSpec) -> JobSpec:
        vm = _vm(job)
        endpoint = self.driver.guest_endpoint(spec)
        port = endpoint[1] if endpoint else 443
        inputs = tuple(InputRef(uid=f.data, name=f.name, sha256=f.sha256)
                       for f in job.files if f.role == "input")
        return JobSpec(
            job_uid=job.uid, owner=vm.owner, app=job.app or vm.template.name,
            mode=Mode.PILOT if vm.pilot else Mode.SINGLE, network=spec.network,
            server_url=f"https://{GUEST_SERVER_NAME}:{port}", server_ca_pem=self.opts.ca_pem,
            credential=vm.delegated_token,
            payload=Payload(command=job.command or "", args=job.args, env=dict(job.env),
                            inputs=inputs),
            limits=Limits(wall_clock_seconds=job.wall_clock_s or DEFAULT_WALL_CLOCK_S,
                          cpus=spec.vcpus, memory_mb=spec.memory_mb,
                          disk_mb=spec.disk_cap_mb or 1,
                          idle_seconds=(vm.pilot_idle_s or DEFAULT_PILOT_IDLE_S)
                          if vm.pilot else None))

    @contextlib.contextmanager
    def _vm(self, spec: VMSpec) -> Iterator[None]:
        uid, work_dir = spec.job_uid, self.opts.work_dir
        try:
            faults.step("define", uid, work_dir)
            self.driver.define(spec)
            faults.step("boot", uid, work_dir)
            self.driver.start(uid)
            faults.step("running", uid, work_dir)
            yield
        finally:
            faults.step("destroy", uid, work_dir)
            try:
                self.driver.destroy(uid)
            except XwvmError as e:  # swept before the next job (sweep())
                log.warning("job %s: its VM could not be removed now (%s); it will be "
                            "before the next job", uid, e.message)
            if spec.context_iso:
                spec.context_iso.unlink(missing_ok=True)

    def sweep(self, active: Collection[str] = ()) -> list[str]:
        """Remove every VM and file of this worker's jobs that are not ``active`` (a destroy
        that failed while the hypervisor was away, a file a crash left): run between jobs,
        so nothing is left behind at run time, not only at the next start. The job uids
        whose leftovers went."""
        removed = set()
        for uid in self.driver.cleanup_leftovers() if not active else ():
            removed.add(uid)
        for uid in self.driver.list_own() if active else ():
            if uid not in active:
                self.driver.destroy(uid)
                removed.add(uid)
        for entry in self.vm_dir.iterdir():
            uid = entry.name.rsplit("-", 1)[0]
            if uid not in active:
                entry.unlink(missing_ok=True)
                removed.add(uid)
        return sorted(removed)

    def _monitor(self, job: JobDescription, stop: threading.Event) -> str:
        """Wait for the guest to power off; stop it on request, at its wall-clock limit, or
        when it makes no progress (no console output: the nested worker beats there)."""
        uid, wall = job.uid, job.wall_clock_s
        started = time.monotonic()
        last_progress, last_console = started, -1
        next_check = started
        paused_since: float | None = None
        while True:
            state = self.driver.state(uid)  # the driver rides out a hypervisor restart
            # DEFINED after start: off, for a reason the hypervisor forgot (libvirt says
            # "shut off (unknown)" when libvirtd restarted as the guest powered off); its
            # verdict (or none: given back) says how it ended
            if state in (VMState.SHUTOFF, VMState.MISSING, VMState.DEFINED):
                return "off"
            if state == VMState.CRASHED:
                return "crashed"
            now = time.monotonic()
            paused_since = (paused_since or now) if state == VMState.PAUSED else None
            if paused_since is not None and now - paused_since > PAUSED_S:
                self.driver.stop(uid, 0)  # nobody here pauses VMs: its hypervisor did
                return "paused"
            if stop.is_set():
                self.driver.stop(uid, STOP_GRACE_S)
                return "stopped"
            if wall and now - started > wall:
                self.driver.stop(uid, STOP_GRACE_S)
                return "wall_clock"
            if now >= next_check:
                next_check = now + 5.0
                size = self.driver.console_size(uid)
                if size > CONSOLE_MAX_BYTES:
                    self.driver.stop(uid, 0)
                    return "console_flood"
                if size != last_console:
                    last_progress, last_console = now, size
                elif now - last_progress > self.opts.hang_timeout_s:
                    self.driver.stop(uid, 0)
                    return "hung"
            time.sleep(self.opts.poll_s)

    def _console(self, uid: str) -> str:
        try:
            return self.driver.console_log(uid)
        except XwvmError:
            return ""

    def _verdict(self, job: JobDescription, disk: Path, console: str) -> VMOutcome:
        """The guest's verdict from its exchange disk: the results are the server's already
        (uploaded by the nested worker) or on the disk (network=none), uploaded from here
        with the worker's own credential."""
        uid = job.uid
        tail = console[-1500:].strip()
        archive = disk.with_name(f"{uid}-results.tar.gz")
        try:
            got = _read_verdict(disk, uid, archive)
            if isinstance(got, exchange.NoVerdict):  # the VM died before its agent could
                log.warning("job %s: %s: given back", uid, got.message)
                full = got.message.startswith("the worker's disk is full")
                return VMOutcome(JobStatus.PENDING, message=f"{got.message}; console:\n{tail}",
                                 fault=Fault.DISK_FULL if full else Fault.VM_CRASHED)
            if isinstance(got, str):
                return VMOutcome(JobStatus.ERROR, message=f"{got}; console:\n{tail}")
            problem = _no_results(got, _vm(job).network)
            if problem is not None and got.fault is not None:  # the server was away
                log.warning("job %s: the guest could not deliver its results (%s): given "
                            "back", uid, got.fault)
                return VMOutcome(JobStatus.PENDING, message=f"{problem}; console:\n{tail}",
                                 fault=got.fault)
            if problem is not None:
                return VMOutcome(JobStatus.ERROR, exit_code=got.exit_code,
                                 message=f"{problem}; console:\n{tail}")
            if got.archive is not None and not self.upload(uid, archive, got.exit_code):
                return VMOutcome(None, message="results not taken: the job is no longer ours")
        finally:
            archive.unlink(missing_ok=True)
        return VMOutcome(JobStatus.COMPLETED, exit_code=got.exit_code, message=got.message)

    def _stopped(self, job: JobDescription, state: str, console: str) -> VMOutcome:
        """Why this side stopped the VM (or why it crashed)."""
        tail = console[-1500:].strip()
        if state == "wall_clock":
            return VMOutcome(JobStatus.ERROR, message=f"wall-clock limit of {job.wall_clock_s} s "
                                              f"exceeded; console:\n{tail}")
        if state == "hung":
            return VMOutcome(JobStatus.ERROR, message=f"the VM made no progress for "
                                              f"{self.opts.hang_timeout_s:.0f} s; console:\n"
                                              f"{tail}")
        if state == "console_flood":
            return VMOutcome(JobStatus.ERROR, message=f"the VM wrote more than "
                                              f"{CONSOLE_MAX_BYTES // 2**20} MiB to its console "
                                              f"and was stopped; console:\n{tail}")
        if state == "paused":
            full = shutil.disk_usage(self.vm_dir).free < LOW_DISK_BYTES
            log.warning("job %s: the hypervisor paused the VM%s: given back", job.uid,
                        " (the work dir's disk is full)" if full else "")
            return VMOutcome(JobStatus.PENDING, fault=Fault.DISK_FULL if full else Fault.HOST,
                             message="the hypervisor paused the VM (a disk write failed"
                                     + (": the worker's disk is full)" if full else ")")
                                     + f"; console:\n{tail}")
        log.warning("job %s: the VM crashed (its hypervisor process died): given back", job.uid)
        return VMOutcome(JobStatus.PENDING, fault=Fault.VM_CRASHED,
                         message=f"the VM crashed; console:\n{tail}")


def _read_verdict(disk: Path, uid: str,
                  archive: Path) -> exchange.Results | exchange.NoVerdict | str:
    """The guest's verdict from its exchange disk, none (the VM died before writing one),
    or why it does not read. The guest wrote those bytes: whatever they make the reader
    raise is that job's error, never an exception that ends the worker (and then the next
    worker the job goes to)."""
    try:
        return exchange.read_results(disk, uid, archive)
    except exchange.NoVerdict as e:
        return e
    except OSError as e:
        if faults.is_disk_full(e):  # the worker's disk, copying the results out
            return exchange.NoVerdict(f"the worker's disk is full: {e}")
        return str(e)
    except exchange.ExchangeError as e:
        return e.message
    except Exception as e:  # a reader bug a guest found: logged, and the job's error
        log.exception("the exchange disk of job %s does not read", uid)
        return f"the exchange disk does not read ({type(e).__name__})"


def _no_results(got: exchange.Results, network: vocab.NetworkPolicy) -> str | None:
    """Why the verdict brings no results (None: it does). ``uploaded`` is believed only
    from a VM with a network: a network=none VM has no NIC nor credential to upload
    with (the server still checks the others: no results, no COMPLETED)."""
    if got.archive is not None:
        return None
    if not got.uploaded:
        return got.message or "the guest wrote no results"
    if network == vocab.NetworkPolicy.NONE:
        return ("the guest claims it uploaded the results, which a network=none VM "
                "cannot do")
    return None
