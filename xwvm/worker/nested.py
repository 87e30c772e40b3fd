"""The nested worker: runs inside the VM, with a credential delegated for one VM job.

Single-job mode: fetch the payload's inputs, run the payload as the unprivileged user,
upload the results and the payload's exit code for the VM job, and return.
Pilot mode: keep taking the owner's jobs of the template's shared app (e.g. ``root``),
run and report each, until idle for the pilot's idle limit or out of wall-clock time.
Progress beats for the VM job go to the server over the nested worker's own connection.
Offline (network=none, no NIC): one job, inputs and results on the exchange disk.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from contextualizer.model import JobContext
from xwvm.errors import XwvmError
from xwvm.worker import exchange, native, sandbox

if TYPE_CHECKING:  # requests is not imported by an offline (network=none) guest
    from xwvm.client.sdk import Client

log = logging.getLogger("xwvm.nested")
T = TypeVar("T")
BEAT_S = 10.0
# The appliance's environment (/opt/xwvm/env: ROOT's PYTHONPATH and PATH) reaches payloads.
INHERITED_ENV = ("PATH", "PYTHONPATH", "LD_LIBRARY_PATH", "ROOTSYS", "LANG", "LC_ALL")
WALL_CLOCK_MARGIN_S = 60


@dataclass
class Task:
    """One payload to run: the VM job's own, or a job a pilot took."""

    uid: str
    command: str
    args: list[str]
    env: dict[str, str]
    inputs: list[tuple[str, str, str]]  # (data uid, name, sha256)
    wall_clock_s: int | None


def retrying(fn: Callable[[], T], attempts: int = 5, delay: float = 1.0) -> T:
    """Retry a call that failed in transit (no answer, a broken TLS stream through the
    VM's forwarded port, a 502/503/504): the server's answers are idempotent here."""
    for attempt in range(attempts):
        try:
            return fn()
        except XwvmError as e:
            if e.status not in (0, 502, 503, 504) or attempt == attempts - 1:
                raise
            log.warning("%s; retrying in %.0f s", e.message, delay)
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


class NestedWorker:
    """``exchange_disk`` set (network=none): no server at all; the inputs come from that
    block device, the results and exit code go back onto it, and progress beats go to the
    console, where the outer worker's hang detection sees them."""

    def __init__(self, ctx: JobContext, client: Client | None, work_dir: Path,
                 user: str | None, exchange_disk: Path | None = None) -> None:
        self.ctx, self.client, self.work_dir, self.user = ctx, client, Path(work_dir), user
        self.exchange_disk = exchange_disk
        self.stop = threading.Event()
        self.base_env = {k: os.environ[k] for k in INHERITED_ENV if k in os.environ}
        # The appliance has no bubblewrap: the VM is the sandbox, and inside it the payload
        # runs as the unprivileged user, every one of whose processes is killed before root
        # touches the job's files again.
        self.isolation = sandbox.guest_isolation(user)

    @property
    def server(self) -> Client:
        if self.client is None:
            raise XwvmError("this nested worker has no server (network=none)")
        return self.client

    # --- progress ---------------------------------------------------------------------------

    def _beat(self, phase: str) -> None:
        if self.exchange_disk is not None:
            print(f"xwvm-agent: beat {phase}", flush=True)
            return
        try:
            answer = self.server.post(f"/works/{self.ctx.job_uid}/progress", {"phase": phase})
            if answer.get("stop"):
                self.stop.set()
        except XwvmError as e:
            log.warning("progress beat failed: %s", e.message)

    def _beats(self, done: threading.Event) -> None:
        while not done.wait(BEAT_S):
            self._beat("running")

    def _with_beats(self, fn: Any) -> Any:
        done = threading.Event()
        threading.Thread(target=self._beats, args=(done,), daemon=True).start()
        try:
            return fn()
        finally:
            done.set()

    # --- one payload --------------------------------------------------------------------------

    def run_task(self, task: Task) -> native.Outcome:
        """Fetch the inputs, run the command as the payload user, upload the results.
        The job's directory is root's (never inside the payload user's home), its run/
        is given to the payload only once the inputs are in."""
        self.isolation.reap()  # nothing the previous task (or a login) left may race root
        box = native.Sandbox(self.work_dir / task.uid)
        box.create()
        try:
            self._fetch_inputs(task, box.run_dir)
            placed = {p.relative_to(box.run_dir).as_posix(): p.stat().st_mtime
                      for p in box.run_dir.rglob("*") if p.is_file()}
            # The job's arguments follow the command, as "$@" (never pasted into the string).
            job = {"args": ["-c", f'{task.command} "$@"', "xwvm-payload", *task.args],
                   "env": task.env, "wall_clock_s": task.wall_clock_s}
            outcome = native.run(job, box, Path("/bin/sh"), None, self.stop, self.isolation,
                                 base_env=self.base_env)
            owner = self.isolation.account.uid if self.isolation.account else None
            with tempfile.TemporaryDirectory() as tmp:
                archive = native.pack_results(box, placed, Path(tmp) / "results.tar.gz", owner)
                self._deliver(task, archive, outcome)
            return outcome
        finally:
            box.remove()

    def _fetch_inputs(self, task: Task, run_dir: Path) -> None:
        if self.exchange_disk is not None:
            exchange.extract_inputs(self.exchange_disk, task.uid, run_dir)
            return
        for data_uid, name, sha in task.inputs:
            dest = run_dir / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            retrying(lambda d=data_uid, p=dest, h=sha: self.server.download_data(d, p, sha256=h))

    def _deliver(self, task: Task, archive: Path, outcome: native.Outcome) -> None:
        if self.exchange_disk is not None:
            exchange.write_results(self.exchange_disk, task.uid, archive, outcome.exit_code,
                                   outcome.reason or "")
        else:
            retrying(lambda: self.server.upload_result(task.uid, archive))

    # --- modes --------------------------------------------------------------------------------

    def run_single(self) -> int | None:
        ctx = self.ctx
        self._beat("fetching")
        task = Task(uid=ctx.job_uid, command=ctx.payload.command, args=list(ctx.payload.args),
                    env={**dict(ctx.env), **dict(ctx.payload.env)},
                    inputs=[(r.uid, r.name, r.sha256) for r in ctx.payload.inputs],
                    wall_clock_s=ctx.limits.wall_clock_seconds)
        outcome = self._with_beats(lambda: self.run_task(task))
        if self.exchange_disk is None:  # offline, the exit code went onto the disk
            retrying(lambda: self.server.post(f"/works/{ctx.job_uid}/payload", {
                "exit_code": outcome.exit_code, "message": outcome.reason or None}))
        return outcome.exit_code

    def run_pilot(self) -> int:
        """Serve jobs until idle or out of time; returns how many ran."""
        ctx = self.ctx
        idle_s = ctx.limits.idle_seconds or 60
        deadline = time.monotonic() + ctx.limits.wall_clock_seconds - WALL_CLOCK_MARGIN_S
        served: list[dict[str, Any]] = []
        idle_since, delay = time.monotonic(), 1.0
        while not self.stop.is_set() and time.monotonic() < deadline:
            desc = retrying(lambda: self.server.post(f"/works/{ctx.job_uid}/pilot-work")
                            ).get("work")
            if desc is None:
                if time.monotonic() - idle_since > idle_s:
                    break
                self._beat("idle")
                self.stop.wait(delay)
                delay = min(delay * 1.5, 5.0)
                continue
            served.append(self._serve(desc))
            idle_since, delay = time.monotonic(), 1.0
        self._pilot_results(served)
        return len(served)

    def _serve(self, desc: dict[str, Any]) -> dict[str, Any]:
        task = Task(uid=desc["uid"], command=desc.get("command") or "true",
                    args=list(desc["args"]), env={**dict(self.ctx.env), **desc["env"]},
                    inputs=[(f["data"], f["name"], f["sha256"]) for f in desc["files"]
                            if f["role"] == "input"], wall_clock_s=desc.get("wall_clock_s"))
        started = time.monotonic()
        try:
            outcome = self._with_beats(lambda: self.run_task(task))
        except (XwvmError, OSError) as e:
            self._report(task.uid, "ERROR", None, f"the pilot could not run it: {e}")
            return {"uid": task.uid, "error": str(e)}
        if outcome.stopped:
            self._report(task.uid, "ERROR", outcome.exit_code, outcome.reason)
        else:
            self._report(task.uid, "COMPLETED", outcome.exit_code, None)
        return {"uid": task.uid, "exit_code": outcome.exit_code,
                "seconds": round(time.monotonic() - started, 3)}

    def _report(self, uid: str, status: str, exit_code: int | None,
                message: str | None) -> None:
        try:
            retrying(lambda: self.server.report(uid, status, exit_code, message))
        except XwvmError as e:
            log.warning("report of %s refused: %s", uid, e.message)

    def _pilot_results(self, served: list[dict[str, Any]]) -> None:
        """The pilot VM job's own results: what it served."""
        with tempfile.TemporaryDirectory() as tmp:
            sandbox = native.Sandbox(Path(tmp) / "pilot")
            sandbox.create()
            sandbox.stdout.write_text(f"pilot served {len(served)} job(s)\n")
            sandbox.stderr.write_text("")
            (sandbox.run_dir / "served.json").write_text(json.dumps(served, indent=2))
            archive = native.pack_results(sandbox, {}, Path(tmp) / "results.tar.gz")
            retrying(lambda: self.server.upload_result(self.ctx.job_uid, archive))
        retrying(lambda: self.server.post(f"/works/{self.ctx.job_uid}/payload", {
            "exit_code": 0, "message": f"pilot served {len(served)} job(s)"}))
