"""The in-VM agent (`/opt/xwvm/bin/xwvm-agent`): started by the appliance's init as root.

It reads ``/run/xwvm/context.json``, refuses to run payloads on a guest that breaks the
hardening policy (and says why, to the console and to the server), then starts the
nested worker with the delegated credential; the payload runs as the unprivileged user.
With network=none (no NIC) the nested worker works offline on the job's exchange disk.
Its exit status tells init what happened; init powers the VM off afterwards.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from appliance import guest, hardening
from contextualizer.errors import ContextError
from contextualizer.model import JobContext, Mode, NetworkPolicy
from xwvm.errors import XwvmError
from xwvm.worker import exchange
from xwvm.worker.nested import NestedWorker

EXIT_OK, EXIT_BAD_CONTEXT, EXIT_HARDENING, EXIT_FAILED = 0, 2, 3, 4


def say(message: str) -> None:
    print(f"xwvm-agent: {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="xwvm-agent")
    ap.add_argument("--context", type=Path, default=Path("/run/xwvm/context.json"))
    # Root's, outside the payload user's home: the payload may not rename or replace it.
    ap.add_argument("--work-dir", type=Path, default=Path("/var/lib/xwvm/jobs"))
    ap.add_argument("--user", default="xwvm", help="account that runs payloads")
    ap.add_argument("--root", type=Path, default=Path("/"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="xwvm-agent: %(message)s")
    try:
        ctx = JobContext.from_document(json.loads(args.context.read_text()))
    except (OSError, ValueError, XwvmError, ContextError) as e:
        say(f"cannot use the context {args.context}: {e}")
        return EXIT_BAD_CONTEXT
    if ctx.network == NetworkPolicy.NONE:
        try:
            device = exchange.find_device(ctx.job_uid, args.root / "sys/class/block",
                                          args.root / "dev")
        except exchange.ExchangeError as e:
            say(e.message)
            return EXIT_BAD_CONTEXT
        nested = NestedWorker(ctx, None, args.work_dir, args.user, exchange_disk=device)
        say(f"offline: job {ctx.job_uid} on {device}")
    else:
        from xwvm.client.sdk import Client  # requests: seconds to import under emulation
        ca = args.context.parent / "server-ca.pem"
        ca.write_text(ctx.server_ca_pem)
        nested = NestedWorker(ctx, Client(ctx.server_url, ca, token=ctx.credential),
                              args.work_dir, args.user)
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
            if nested.client is None:
                raise XwvmError("a pilot needs the server: network=none cannot serve one")
            say(f"pilot served {nested.run_pilot()} job(s)")
        else:
            say(f"payload exit {nested.run_single()}")
    except (XwvmError, OSError) as e:
        say(f"payload failed: {e}")
        if nested.exchange_disk is not None:  # offline: the reason goes onto the disk
            report(nested, f"payload failed: {e}")
        return EXIT_FAILED
    return EXIT_OK


def refuse(nested: NestedWorker, reason: str, code: int) -> int:
    """Run no payload, and say why on the console and to the outer worker."""
    say(reason)
    report(nested, reason)
    return code


def report(nested: NestedWorker, reason: str) -> None:
    """Why no results come: to the server, or on the exchange disk, where the outer worker
    reads it into the job's error."""
    try:
        if nested.exchange_disk is not None:
            exchange.write_results(nested.exchange_disk, nested.ctx.job_uid, None, None,
                                   reason)
        else:
            nested.server.post(f"/works/{nested.ctx.job_uid}/payload",
                               {"exit_code": None, "message": reason})
    except (XwvmError, OSError) as e:
        say(f"could not report it: {e}")


if __name__ == "__main__":
    sys.exit(main())
