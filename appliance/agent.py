"""The in-VM agent (`/opt/xwvm/bin/xwvm-agent`): started by the appliance's init as root.

It reads ``/run/xwvm/context.json``, refuses to run payloads on a guest that breaks the
hardening policy (and says why, to the console and to the server), then starts the
nested worker with the delegated credential; the payload runs as the unprivileged user.
With network=none (no NIC) the nested worker works offline on the job's exchange disk.
Its exit status tells init what happened; init powers the VM off afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from pathlib import Path

from appliance import hardening
from contextualizer.model import JobContext, Mode, NetworkPolicy
from xwvm.client.sdk import Client
from xwvm.errors import XwvmError
from xwvm.worker import exchange
from xwvm.worker.nested import NestedWorker

EXIT_OK, EXIT_BAD_CONTEXT, EXIT_HARDENING, EXIT_FAILED = 0, 2, 3, 4


def say(message: str) -> None:
    print(f"xwvm-agent: {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="xwvm-agent")
    ap.add_argument("--context", type=Path, default=Path("/run/xwvm/context.json"))
    ap.add_argument("--work-dir", type=Path, default=Path("/home/xwvm/jobs"))
    ap.add_argument("--user", default="xwvm", help="account that runs payloads")
    ap.add_argument("--root", type=Path, default=Path("/"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="xwvm-agent: %(message)s")
    try:
        ctx = JobContext.from_document(json.loads(args.context.read_text()))
    except (OSError, ValueError, XwvmError) as e:
        say(f"cannot use the context {args.context}: {e}")
        return EXIT_BAD_CONTEXT
    found = hardening.problems(args.root)
    if ctx.network == NetworkPolicy.NONE:
        return run_offline(ctx, args, found)
    ca = args.context.parent / "server-ca.pem"
    ca.write_text(ctx.server_ca_pem)
    client = Client(ctx.server_url, ca, token=ctx.credential)
    if found:
        reason = "guest hardening check failed: " + "; ".join(found)
        say(reason)
        try:
            client.post(f"/works/{ctx.job_uid}/payload", {"exit_code": None,
                                                          "message": reason})
        except XwvmError as e:
            say(f"could not report it: {e.message}")
        return EXIT_HARDENING
    say(f"hardening ok; job {ctx.job_uid} mode {ctx.mode.value}")
    nested = NestedWorker(ctx, client, args.work_dir, args.user)
    try:
        if ctx.mode == Mode.PILOT:
            say(f"pilot served {nested.run_pilot()} job(s)")
        else:
            say(f"payload exit {nested.run_single()}")
    except (XwvmError, OSError) as e:
        say(f"payload failed: {e}")
        return EXIT_FAILED
    return EXIT_OK


def run_offline(ctx: JobContext, args: argparse.Namespace, found: list[str]) -> int:
    """network=none: no NIC, no server. Inputs from the exchange disk, results back on it;
    a refusal is written there too, so the outer worker can say why."""
    try:
        device = exchange.find_device(ctx.job_uid, args.root / "sys/class/block",
                                      args.root / "dev")
    except exchange.ExchangeError as e:
        say(e.message)
        return EXIT_BAD_CONTEXT
    if found:
        reason = "guest hardening check failed: " + "; ".join(found)
        say(reason)
        exchange.write_results(device, ctx.job_uid, None, None, reason)
        return EXIT_HARDENING
    say(f"hardening ok; job {ctx.job_uid} mode {ctx.mode.value}, offline on {device}")
    nested = NestedWorker(ctx, None, args.work_dir, args.user, exchange_disk=device)
    try:
        if ctx.mode == Mode.PILOT:
            raise XwvmError("a pilot needs the server: network=none cannot serve one")
        say(f"payload exit {nested.run_single()}")
    except (XwvmError, OSError) as e:
        say(f"payload failed: {e}")
        with contextlib.suppress(XwvmError, OSError):
            exchange.write_results(device, ctx.job_uid, None, None, f"payload failed: {e}")
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
