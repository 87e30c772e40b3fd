"""The nested worker: runs inside the VM, with a credential delegated for one VM job.

Single-job mode: fetch the payload's inputs, run the payload as the unprivileged user,
deliver the results, and leave the verdict (exit code, why it could not run) on the
job's exchange disk. Pilot mode: keep taking the owner's jobs of the template's shared
app (e.g. ``root``), run and report each, until idle for the pilot's idle limit or out of
wall-clock time.

Every VM job has an exchange disk (xwvm.protocol.exchange), and the outer worker reads the
verdict from it after the VM powered off; progress beats go to the console, whose growth
is the outer worker's hang detection. With network=none (no NIC) the inputs come from
that disk and the results archive goes back on it; otherwise the nested worker fetches
and uploads them itself, and tells the server it is alive (whose answer may say stop).

The server may be away for a while: the calls the job's delivery depends on (the inputs,
the results, a pilot's reports and requests for work) wait it out until the job's
deadline (:func:`job_deadline`), the results archive kept on the guest's disk meanwhile;
the payload runs on whatever the beats meet. A refusal (the job moved on) or an outage
past the deadline is said in the verdict, which the outer worker makes the job's error.
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
from typing import Any, TypeVar

from appliance import runner
from appliance.errors import GuestError
from appliance.http import Server, is_refusal
from appliance.isolation import guest_isolation
from contextualizer.model import JobContext
from xwvm.protocol import exchange
from xwvm.protocol.exchange import ExchangeError
from xwvm.protocol.messages import JobDescription
from xwvm.protocol.vocab import DEFAULT_PILOT_IDLE_S, Fault, JobStatus

log = logging.getLogger("xwvm.nested")
T = TypeVar("T")
BEAT_S = 10.0
# The appliance's environment (/opt/xwvm/env: ROOT's PYTHONPATH and PATH) reaches payloads.
INHERITED_ENV = ("PATH", "PYTHONPATH", "LD_LIBRARY_PATH", "ROOTSYS", "LANG", "LC_ALL")
WALL_CLOCK_MARGIN_S = 60
#: Kept back from the job's wall clock to write the verdict and power off in time.
VERDICT_RESERVE_S = 10.0
#: What a payload that could not be run raises (the pilot reports it and goes on).
TASK_ERRORS = (GuestError, ExchangeError, OSError)


def say(message: str) -> None:
    """One line on the console, where the outer worker's logs and hang detection see it."""
    print(f"xwvm-agent: {message}", flush=True)


def job_deadline(wall_clock_s: int, up_s: float = 0.0) -> float:
    """The time.monotonic() by which the nested worker stops waiting for the server: the
    job's wall clock counted from the guest's boot (``up_s`` ago: the outer worker's clock
    started with the VM), less a reserve (10 s, or a tenth of a short wall clock) to leave
    the verdict and power off before the outer worker stops the VM."""
    reserve = min(VERDICT_RESERVE_S, wall_clock_s / 10)
    return time.monotonic() - max(0.0, up_s) + wall_clock_s - reserve


def undelivered(e: GuestError) -> str:
    """The verdict's words for results the server did not take."""
    if is_refusal(e):
        return f"the server refused the results: {e.message} (HTTP {e.status}, {e.code})"
    return f"the results were not delivered: {e.message}"


def _fault(e: GuestError) -> Fault | None:
    """An upload that failed for an outage (not a refusal) is the infrastructure's."""
    return None if is_refusal(e) else Fault.SERVER


@dataclass
class Task:
    """One payload to run: the VM job's own, or a job a pilot took."""

    uid: str
    command: str
    args: list[str]
    env: dict[str, str]
    inputs: list[tuple[str, str, str]]  # (data uid, name, sha256)
    wall_clock_s: int | None


class NestedWorker:
    """``server`` None (network=none): no server at all; the inputs come from the
    exchange disk and the results archive goes back onto it. ``deadline``: as
    :func:`job_deadline` (None: the job's wall clock from now)."""

    def __init__(self, ctx: JobContext, server: Server | None, work_dir: Path,
                 user: str | None, exchange_disk: Path, deadline: float | None = None,
                 beat_s: float = BEAT_S) -> None:
        self.ctx, self.server, self.work_dir, self.user = ctx, server, Path(work_dir), user
        self.exchange_disk = exchange_disk
        self.deadline = deadline if deadline is not None else \
            job_deadline(ctx.limits.wall_clock_seconds)
        self.beat_s, self.beats_failing = beat_s, False
        self.stop = threading.Event()
        self.base_env = {k: os.environ[k] for k in INHERITED_ENV if k in os.environ}
        # The appliance has no bubblewrap: the VM is the sandbox, and inside it the payload
        # runs as the unprivileged user, every one of whose processes is killed before root
        # touches the job's files again.
        self.isolation = guest_isolation(user)

    def online(self) -> Server:
        if self.server is None:
            raise GuestError("a pilot needs the server: network=none cannot serve one")
        return self.server

    # --- the verdict, for the outer worker ---------------------------------------------------

    def verdict(self, exit_code: int | None, message: str, archive: Path | None = None,
                uploaded: bool = False, fault: Fault | None = None) -> None:
        """On the exchange disk: the outer worker's one source for how the payload ended
        (``fault``: the results were not delivered for an outage, not the payload's doing)."""
        exchange.write_results(self.exchange_disk, self.ctx.job_uid, archive, exit_code,
                               message, uploaded, fault)

    # --- progress ---------------------------------------------------------------------------

    def _beat(self, phase: str) -> None:
        """A line on the console (the outer worker's sign of life) and one attempt to tell
        the server. A failed beat never stops the payload: it is said once when beats start
        failing and once when they are answered again. A job that moved on (its credential
        revoked, 401, or not active, 409) is stopped."""
        say(f"beat {phase}")
        if self.server is None:
            return
        try:
            stop = self.server.progress(self.ctx.job_uid, phase).stop
        except GuestError as e:
            stop = e.status in (401, 409)
            self._beat_failed(f"{e.message} (HTTP {e.status})" if e.status else e.message)
        except ValueError as e:  # an answer that is not one: as a failed beat
            stop = False
            self._beat_failed(f"malformed answer: {e}")
        else:
            if self.beats_failing:
                self.beats_failing = False
                log.warning("progress beats are answered again")
        if stop:
            self.stop.set()

    def _beat_failed(self, why: str) -> None:
        if not self.beats_failing:
            self.beats_failing = True
            log.warning("progress beats fail (%s); the payload goes on", why)

    def _beats(self, done: threading.Event) -> None:
        while not done.wait(self.beat_s):
            self._beat("running")

    def _with_beats(self, fn: Callable[[], T]) -> T:
        done = threading.Event()
        threading.Thread(target=self._beats, args=(done,), daemon=True).start()
        try:
            return fn()
        finally:
            done.set()

    # --- one payload --------------------------------------------------------------------------

    def run_task(self, task: Task, deliver: Callable[[Task, Path, runner.Outcome], None]
                 ) -> runner.Outcome:
        """Fetch the inputs, run the command as the payload user, ``deliver`` the results.
        The job's directory is root's (never inside the payload user's home), its run/
        is given to the payload only once the inputs are in."""
        self.isolation.reap()  # nothing the previous task (or a login) left may race root
        box = runner.Sandbox(self.work_dir / task.uid)
        box.create()
        try:
            self._fetch_inputs(task, box.run_dir)
            placed = {p.relative_to(box.run_dir).as_posix(): p.stat().st_mtime
                      for p in box.run_dir.rglob("*") if p.is_file()}
            # The job's arguments follow the command, as "$@" (never pasted into the string).
            job = runner.Command(["-c", f'{task.command} "$@"', "xwvm-payload", *task.args],
                                 task.env, task.wall_clock_s)
            outcome = runner.run(job, box, Path("/bin/sh"), None, self.stop, self.isolation,
                                 base_env=self.base_env)
            owner = self.isolation.account.uid if self.isolation.account else None
            # On the guest's disk, root's (beside run/, never in it), until delivered.
            archive = runner.pack_results(box, placed, box.root / "results.tar.gz", owner)
            deliver(task, archive, outcome)
            return outcome
        finally:
            box.remove()

    def _fetch_inputs(self, task: Task, run_dir: Path) -> None:
        if self.server is None:
            exchange.extract_inputs(self.exchange_disk, task.uid, run_dir)
            return
        for data_uid, name, sha in task.inputs:
            dest = run_dir / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            self.server.download(data_uid, dest, sha)

    def _deliver_own(self, task: Task, archive: Path, outcome: runner.Outcome) -> None:
        """The VM job's own results: on the exchange disk, or uploaded and said so there."""
        if self.server is None:
            self.verdict(outcome.exit_code, outcome.reason, archive)
            return
        failed = self._deliver(self.server, task.uid, archive)
        if failed is None:
            self.verdict(outcome.exit_code, outcome.reason, uploaded=True)
        else:
            self.verdict(outcome.exit_code,
                         "; ".join(m for m in (outcome.reason, undelivered(failed)) if m),
                         fault=_fault(failed))

    @staticmethod
    def _deliver(server: Server, uid: str, archive: Path) -> GuestError | None:
        """Upload (waiting out an outage until the deadline); None, or why not."""
        try:
            server.upload_result(uid, archive)
        except GuestError as e:
            say(undelivered(e))
            return e
        return None

    def _upload(self, task: Task, archive: Path, outcome: runner.Outcome) -> None:
        self.online().upload_result(task.uid, archive)

    # --- modes --------------------------------------------------------------------------------

    def run_single(self) -> int | None:
        ctx = self.ctx
        self._beat("fetching")
        task = Task(uid=ctx.job_uid, command=ctx.payload.command, args=list(ctx.payload.args),
                    env={**dict(ctx.env), **dict(ctx.payload.env)},
                    inputs=[(r.uid, r.name, r.sha256) for r in ctx.payload.inputs],
                    wall_clock_s=ctx.limits.wall_clock_seconds)
        outcome = self._with_beats(lambda: self.run_task(task, self._deliver_own))
        return outcome.exit_code

    def run_pilot(self) -> int:
        """Serve jobs until idle or out of time; returns how many ran. The beats go on
        throughout, also while the server is waited for."""
        return self._with_beats(self._pilot)

    def _pilot(self) -> int:
        served = self._pilot_loop()
        self._pilot_results(served)
        return len(served)

    def _pilot_loop(self) -> list[dict[str, Any]]:
        server, ctx = self.online(), self.ctx
        idle_s = ctx.limits.idle_seconds or DEFAULT_PILOT_IDLE_S
        deadline = self.deadline - WALL_CLOCK_MARGIN_S
        served: list[dict[str, Any]] = []
        idle_since, delay = time.monotonic(), 1.0
        while not self.stop.is_set() and time.monotonic() < deadline:
            desc = server.pilot_work(ctx.job_uid).work
            if desc is None:
                if time.monotonic() - idle_since > idle_s:
                    break
                self._beat("idle")
                self.stop.wait(delay)
                delay = min(delay * 1.5, 5.0)
                continue
            served.append(self._serve(desc))
            idle_since, delay = time.monotonic(), 1.0
        return served

    def _serve(self, desc: JobDescription) -> dict[str, Any]:
        task = Task(uid=desc.uid, command=desc.command or "true", args=list(desc.args),
                    env={**dict(self.ctx.env), **desc.env},
                    inputs=[(f.data, f.name, f.sha256) for f in desc.files
                            if f.role == "input"], wall_clock_s=desc.wall_clock_s)
        started = time.monotonic()
        try:
            outcome = self.run_task(task, self._upload)
        except TASK_ERRORS as e:
            self._report(task.uid, JobStatus.ERROR, None, f"the pilot could not run it: {e}")
            return {"uid": task.uid, "error": str(e)}
        if outcome.stopped:
            self._report(task.uid, JobStatus.ERROR, outcome.exit_code, outcome.reason)
        else:
            self._report(task.uid, JobStatus.COMPLETED, outcome.exit_code, None)
        return {"uid": task.uid, "exit_code": outcome.exit_code,
                "seconds": round(time.monotonic() - started, 3)}

    def _report(self, uid: str, status: JobStatus, exit_code: int | None,
                message: str | None) -> None:
        try:
            self.online().report(uid, status, exit_code, message)
        except GuestError as e:
            log.warning("report of %s refused: %s", uid, e.message)

    def _pilot_results(self, served: list[dict[str, Any]]) -> None:
        """The pilot VM job's own results: what it served."""
        message = f"pilot served {len(served)} job(s)"
        with tempfile.TemporaryDirectory() as tmp:
            box = runner.Sandbox(Path(tmp) / "pilot")
            box.create()
            box.stdout.write_text(message + "\n")
            box.stderr.write_text("")
            (box.run_dir / "served.json").write_text(json.dumps(served, indent=2))
            archive = runner.pack_results(box, {}, Path(tmp) / "results.tar.gz")
            failed = self._deliver(self.online(), self.ctx.job_uid, archive)
        if failed is None:
            self.verdict(0, message, uploaded=True)
        else:
            self.verdict(0, f"{message}; {undelivered(failed)}", fault=_fault(failed))
