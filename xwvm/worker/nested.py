"""The nested worker: runs inside the VM, with a credential delegated for one VM job.

Single-job mode: fetch the payload's inputs, run the payload as the unprivileged user,
upload the results and the payload's exit code for the VM job, and return. Progress
beats go to the server over the nested worker's own connection.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from pathlib import Path

from contextualizer.model import JobContext
from xwvm.client.sdk import Client
from xwvm.errors import XwvmError
from xwvm.worker import native

log = logging.getLogger("xwvm.nested")
BEAT_S = 10.0


class NestedWorker:
    def __init__(self, ctx: JobContext, client: Client, work_dir: Path,
                 user: str | None) -> None:
        self.ctx, self.client, self.work_dir, self.user = ctx, client, Path(work_dir), user
        self.stop = threading.Event()

    def _beat(self, phase: str) -> None:
        try:
            answer = self.client.post(f"/works/{self.ctx.job_uid}/progress", {"phase": phase})
            if answer.get("stop"):
                self.stop.set()
        except XwvmError as e:
            log.warning("progress beat failed: %s", e.message)

    def _beats(self, done: threading.Event) -> None:
        while not done.wait(BEAT_S):
            self._beat("running")

    def run_single(self) -> int | None:
        ctx, uid = self.ctx, self.ctx.job_uid
        sandbox = native.Sandbox(self.work_dir / uid)
        sandbox.create()
        self._beat("fetching")
        for ref in ctx.payload.inputs:
            dest = sandbox.run_dir / ref.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            self.client.download_data(ref.uid, dest, sha256=ref.sha256)
        placed = {p.relative_to(sandbox.run_dir).as_posix(): p.stat().st_mtime
                  for p in sandbox.run_dir.rglob("*") if p.is_file()}
        if self.user:
            sandbox.give_to(self.user)
        # The job's arguments follow the command, as "$@" (never pasted into the string).
        job = {"args": ["-c", f'{ctx.payload.command} "$@"', "xwvm-payload",
                        *ctx.payload.args],
               "env": {**dict(ctx.env), **dict(ctx.payload.env)},
               "wall_clock_s": ctx.limits.wall_clock_seconds}
        done = threading.Event()
        beats = threading.Thread(target=self._beats, args=(done,), daemon=True)
        beats.start()
        self._beat("running")
        try:
            outcome = native.run(job, sandbox, Path("/bin/sh"), None, self.stop, user=self.user)
        finally:
            done.set()
        with tempfile.TemporaryDirectory() as tmp:
            archive = native.pack_results(sandbox, placed, Path(tmp) / "results.tar.gz")
            self.client.upload_result(uid, archive)
        self.client.post(f"/works/{uid}/payload", {"exit_code": outcome.exit_code,
                                                   "message": outcome.reason or None})
        sandbox.remove()
        return outcome.exit_code
