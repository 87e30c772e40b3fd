"""One VM job on the outer worker, above any hypervisor driver.

Template (verified, cached) → overlay → context ISO → define → start → monitor → destroy.
The lifecycle, wall-clock limit and hang detection are written once here; drivers only
create, run and remove VMs. The nested worker inside the VM uploads the results with its
delegated credential; this side reports the job's final status once the VM is off.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
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
from xwvm.client.sdk import Client
from xwvm.errors import XwvmError
from xwvm.worker.drivers.base import Driver, Network, VMSpec, VMState

log = logging.getLogger("xwvm.worker.vm")
GUEST_SERVER_NAME = "xwvm-server"
DEFAULT_WALL_CLOCK_S = 24 * 3600
DEFAULT_PILOT_IDLE_S = 120
STOP_GRACE_S = 5.0
DISK_FORMATS = ("qcow2", "raw")  # what the libvirt driver boots


class ImageSource(Protocol):
    def holdings(self) -> list[str]: ...

    def use(self, client: Client, desc: Any, disk_formats: Any = None
            ) -> contextlib.AbstractContextManager[dict[str, Path]]: ...


@dataclass
class VMOutcome:
    status: str                # COMPLETED | ERROR | PENDING (give back) | "" (job taken away)
    exit_code: int | None = None
    message: str = ""


@dataclass
class VMOptions:
    worker_id: str
    work_dir: Path
    server_url: str
    ca_pem: str
    hang_timeout_s: float = 600.0
    poll_s: float = 0.5


class VMJobRunner:
    def __init__(self, driver: Driver, images: ImageSource, client: Client,
                 opts: VMOptions, verify: Callable[[dict[str, Any]], None]) -> None:
        self.driver, self.images, self.client, self.opts = driver, images, client, opts
        self.verify = verify
        self.vm_dir = Path(opts.work_dir) / "vm"
        self.vm_dir.mkdir(parents=True, exist_ok=True)

    def run(self, job: dict[str, Any], stop: threading.Event,
            shutting_down: threading.Event) -> VMOutcome:
        uid = job["uid"]
        try:
            self.verify(job["template"])
        except XwvmError as e:
            return VMOutcome("ERROR", message=f"template refused: {e.message}")
        if job.get("network", "server") == Network.NONE:
            return VMOutcome("ERROR", message="network=none VM jobs need inputs and results "
                                              "on disks, which this worker does not do yet")
        try:
            with self.images.use(self.client, job["template"], DISK_FORMATS) as paths:
                spec = self._spec(job, paths)
                self._context_iso(job, spec)
                with self._vm(spec):
                    state = self._monitor(job, stop)
                    console = self._console(uid)
        except XwvmError as e:
            return VMOutcome("ERROR", message=f"could not start the VM: {e.message}")
        if stop.is_set():
            return VMOutcome("PENDING" if shutting_down.is_set() else "",
                             message="worker stopping: VM job given back")
        return self._verdict(job, state, console)

    # --- steps --------------------------------------------------------------------------

    def _spec(self, job: dict[str, Any], paths: dict[str, Path]) -> VMSpec:
        tpl = job["template"]
        disk = next(a for a in tpl["artifacts"] if a["role"] == "disk")
        server = urlsplit(self.opts.server_url)
        memory = max(job.get("min_memory_mb") or 0, tpl.get("min_memory_mb") or 0, 256)
        return VMSpec(job_uid=job["uid"], worker_id=self.opts.worker_id,
                      base_image=paths["disk"].resolve(), base_format=disk["format"],
                      vcpus=max(job.get("min_cpus") or 0, tpl.get("min_cpus") or 0, 1),
                      memory_mb=memory, disk_cap_mb=job.get("min_disk_mb") or 0,
                      context_iso=(self.vm_dir / f"{job['uid']}-context.iso").resolve(),
                      kernel=paths.get("kernel"), initrd=paths.get("initrd"),
                      cmdline=tpl.get("cmdline"), network=Network(job.get("network", "server")),
                      server_endpoint=(server.hostname or "127.0.0.1",
                                       server.port or 443))

    def _context_iso(self, job: dict[str, Any], spec: VMSpec) -> None:
        endpoint = self.driver.guest_endpoint(spec)
        port = endpoint[1] if endpoint else 443
        inputs = tuple(InputRef(uid=f["data"], name=f["name"], sha256=f["sha256"])
                       for f in job["files"] if f["role"] == "input")
        pilot = bool(job.get("pilot"))
        ctx = build_job_context(job.get("context") or {}, JobSpec(
            job_uid=job["uid"], owner=job["owner"], app=job["app"],
            mode=Mode.PILOT if pilot else Mode.SINGLE,
            server_url=f"https://{GUEST_SERVER_NAME}:{port}", server_ca_pem=self.opts.ca_pem,
            credential=job["delegated_token"],
            payload=Payload(command=job.get("command") or "", args=tuple(job["args"]),
                            env=dict(job["env"]), inputs=inputs),
            limits=Limits(wall_clock_seconds=job.get("wall_clock_s") or DEFAULT_WALL_CLOCK_S,
                          cpus=spec.vcpus, memory_mb=spec.memory_mb,
                          disk_mb=spec.disk_cap_mb or 1,
                          idle_seconds=(job.get("pilot_idle_s") or DEFAULT_PILOT_IDLE_S)
                          if pilot else None)))
        assert spec.context_iso is not None
        write_iso(ctx, spec.context_iso)

    @contextlib.contextmanager
    def _vm(self, spec: VMSpec) -> Iterator[None]:
        try:
            self.driver.define(spec)
            self.driver.start(spec.job_uid)
            yield
        finally:
            with contextlib.suppress(XwvmError):
                self.driver.destroy(spec.job_uid)
            if spec.context_iso:
                spec.context_iso.unlink(missing_ok=True)

    def _monitor(self, job: dict[str, Any], stop: threading.Event) -> str:
        """Wait for the guest to power off; stop it on request, at its wall-clock limit, or
        when it makes no progress (no console output and no nested-worker beat)."""
        uid = job["uid"]
        wall = job.get("wall_clock_s")
        started = time.monotonic()
        last_progress, last_console, last_seen = started, -1, None
        next_check = started
        while True:
            state = self.driver.state(uid)
            if state in (VMState.SHUTOFF, VMState.MISSING):
                return "off"
            if state == VMState.CRASHED:
                return "crashed"
            now = time.monotonic()
            if stop.is_set():
                self.driver.stop(uid, STOP_GRACE_S)
                return "stopped"
            if wall and now - started > wall:
                self.driver.stop(uid, STOP_GRACE_S)
                return "wall_clock"
            if now >= next_check:
                next_check = now + 5.0
                size = len(self.driver.console_log(uid))
                seen = self._nested_seen(uid)
                if size != last_console or seen != last_seen:
                    last_progress, last_console, last_seen = now, size, seen
                elif now - last_progress > self.opts.hang_timeout_s:
                    self.driver.stop(uid, 0)
                    return "hung"
            time.sleep(self.opts.poll_s)

    def _nested_seen(self, uid: str) -> str | None:
        try:
            return self.client.get_work(uid).get("nested_seen_at")
        except XwvmError:
            return None

    def _console(self, uid: str) -> str:
        try:
            return self.driver.console_log(uid)
        except XwvmError:
            return ""

    def _verdict(self, job: dict[str, Any], state: str, console: str) -> VMOutcome:
        tail = console[-1500:].strip()
        if state == "wall_clock":
            return VMOutcome("ERROR", message=f"wall-clock limit of {job['wall_clock_s']} s "
                                              f"exceeded; console:\n{tail}")
        if state == "hung":
            return VMOutcome("ERROR", message=f"the VM made no progress for "
                                              f"{self.opts.hang_timeout_s:.0f} s; console:\n"
                                              f"{tail}")
        if state == "crashed":
            return VMOutcome("ERROR", message=f"the VM crashed; console:\n{tail}")
        try:
            now = self.client.get_work(job["uid"])
        except XwvmError as e:
            return VMOutcome("ERROR", message=f"could not read the job after the VM: {e}")
        if now.get("result"):
            return VMOutcome("COMPLETED", exit_code=now.get("exit_code"),
                             message=now.get("error") or "")
        reason = now.get("error") or "the VM powered off without uploading results"
        return VMOutcome("ERROR", exit_code=now.get("exit_code"),
                         message=f"{reason}; console:\n{tail}")
