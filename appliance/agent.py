"""The in-VM agent (`/opt/xwvm/bin/xwvm-agent`): started by the appliance's init as root.

It reads ``/run/xwvm/context.json``, finds the job's exchange disk, refuses to run
payloads on a guest that breaks the hardening policy (and says why, on the console and
on that disk), then starts the nested worker with the delegated credential; the payload
runs as the unprivileged user. With network=none (no NIC) the nested worker works
offline, on the exchange disk alone. Its exit status tells init what happened; init
powers the VM off afterwards, and the outer worker reads the verdict from the disk.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from appliance import guest, hardening
from appliance.errors import GuestError
from appliance.exchange import find_device
from appliance.http import PATIENT, Server
from appliance.nested import TASK_ERRORS, NestedWorker, job_deadline, say
from contextualizer.errors import ContextError
from contextualizer.model import JobContext, Mode, NetworkPolicy
from xwvm.protocol.exchange import ExchangeError

EXIT_OK, EXIT_BAD_CONTEXT, EXIT_HARDENING, EXIT_FAILED = 0, 2, 3, 4


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="xwvm-agent")
    ap.add_argument("--context", type=Path, default=Path("/run/xwvm/context.json"))
    # Root's, outside the payload user's home: the payload may not rename or replace it.
    ap.add_argument("--work-dir", type=Path, default=Path("/var/lib/xwvm/jobs"))
    ap.add_argument("--user", default="xwvm", help="account that runs payloads")
    ap.add_argument("--root", type=Path, default=Path("/"), help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="xwvm-agent: %(message)s")
    protect_from_oom(args.root)
    try:
        ctx = JobContext.from_document(json.loads(args.context.read_text()))
    except (OSError, ValueError, ContextError) as e:
        say(f"cannot use the context {args.context}: {e}")
        return EXIT_BAD_CONTEXT
    try:
        nested = nested_worker(ctx, args)
    except (ExchangeError, GuestError, OSError) as e:
        say(str(e))
        return EXIT_BAD_CONTEXT
    found = hardening.problems(args.root)
    if found:
        return refuse(nested, "guest hardening check failed: " + "; ".join(found),
                      EXIT_HARDENING)
    try:
        guest.apply(ctx, args.user, args.root)
    except (OSError, KeyError, guest.GuestSetupError) as e:
        return refuse(nested, f"could not apply the context to the guest: {e}",
                      EXIT_BAD_CONTEXT)
    say(f"hardening ok; job {ctx.job_uid} mode {ctx.mode.value}")
    try:
        if ctx.mode == Mode.PILOT:
            say(f"pilot served {nested.run_pilot()} job(s)")
        else:
            say(f"payload exit {nested.run_single()}")
    except (*TASK_ERRORS, ValueError) as e:
        return refuse(nested, f"payload failed: {e}", EXIT_FAILED)
    return EXIT_OK


OOM_NEVER = -1000


def protect_from_oom(root: Path) -> bool:
    """The guest's OOM killer never takes the agent (its payloads go first: runner.oom_first):
    without it, a payload exhausting the VM's memory could kill the agent, the VM would
    power off with no verdict, and the job would be given back as a crashed VM, counted
    against every host it went to. Best effort: False (and said) if refused."""
    try:
        (root / "proc/self/oom_score_adj").write_text(str(OOM_NEVER))
        return True
    except OSError as e:
        say(f"cannot protect the agent from the OOM killer: {e}")
        return False


def nested_worker(ctx: JobContext, args: argparse.Namespace) -> NestedWorker:
    """The nested worker for ``ctx``, on its exchange disk (every VM job has one)."""
    device = find_device(ctx.job_uid, args.root / "sys/class/block", args.root / "dev")
    deadline = job_deadline(ctx.limits.wall_clock_seconds, uptime(args.root))
    if ctx.network == NetworkPolicy.NONE:
        say(f"offline: job {ctx.job_uid} on {device}")
        return NestedWorker(ctx, None, args.work_dir, args.user, device, deadline)
    ca = args.context.parent / "server-ca.pem"
    ca.write_text(ctx.server_ca_pem)
    # The server may be away for a while: its calls wait it out until the job's deadline.
    server = Server(ctx.server_url, ca, ctx.credential, backoff=PATIENT, deadline=deadline)
    return NestedWorker(ctx, server, args.work_dir, args.user, device, deadline)


def uptime(root: Path) -> float:
    """Seconds since the guest booted (0 when the root has no /proc/uptime)."""
    try:
        return float((root / "proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0


def refuse(nested: NestedWorker, reason: str, code: int) -> int:
    """Run no (more) payload, and say why on the console and on the exchange disk, where
    the outer worker reads it into the job's error."""
    say(reason)
    try:
        nested.verdict(None, reason)
    except (ExchangeError, OSError) as e:
        say(f"could not report it: {e}")
    return code


if __name__ == "__main__":
    sys.exit(main())
