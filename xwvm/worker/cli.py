"""`xwvm worker enroll|run|nested`: the worker's command group, added to the root command
by :mod:`xwvm.cli`.

It imports the worker's modules at once, so that a host without the worker's dependencies
fails here with an ImportError, which the root command turns into "the worker group is
unavailable". Shared CLI helpers (error printing, durations) come from the client's
:mod:`xwvm.client.cli_common`.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from xwvm.client.cli_common import WALL_CLOCK, fail, format_option, handle_errors, output
from xwvm.client.session import Session
from xwvm.protocol.vocab import HYPERVISORS
from xwvm.worker.credential import Credential
from xwvm.worker.pull import Worker, WorkerOptions


@click.group("worker")
def worker_group() -> None:
    """Enroll and run workers."""


@worker_group.command("enroll")
@click.option("-o", "--output", "dest", required=True, type=click.Path(path_type=Path))
@click.option("--project", help="run only this usergroup's jobs")
@click.option("--public", is_flag=True, help="run public jobs of anyone (super users)")
@format_option()
@handle_errors
def worker_enroll(dest: Path, project: str | None, public: bool, fmt: str) -> None:
    """Write a worker credential file (worker-user rights); its password is in the file
    only, never printed."""
    s = Session.load()
    answer = s.client().enroll_worker(project, public)
    ca_pem = Path(s.ca).read_text() if s.ca else None
    Credential(server=s.server, login=answer["login"], password=answer["password"],
               ca_pem=ca_pem).save(dest)
    scope = project or ("public jobs" if public else f"jobs of {s.login}")
    if fmt == "table":
        click.echo(f"wrote {dest}: worker {answer['login']} for {scope}")
        return
    output([{"credential": str(dest), "login": answer["login"], "for": scope}],
           ("credential", "login", "for"), fmt, "worker")


def _credential(url: str | None, ca: str | None, credential: Path | None, cert: Path | None,
                key: Path | None) -> Credential:
    """The login the options name: a credential file, or a certificate and its key."""
    if bool(cert) != bool(key):
        fail("give both --cert and --key")
    if bool(credential) == bool(cert):
        fail("give either --credential or --cert and --key")
    if cert and key:
        if not url or not ca:
            fail("a certificate login needs --server and --ca")
        return Credential.x509(url, cert, key, Path(ca).read_text())
    assert credential is not None
    return Credential.load(credential)


#: The options of `xwvm worker run` that become :class:`WorkerOptions` fields.
RUN_OPTIONS = (
    click.option("--work-dir", required=True, type=click.Path(path_type=Path)),
    click.option("--name", help="host name shown in 'xwvm workers'"),
    click.option("--shared-app", "shared_apps", multiple=True,
                 help="apps this host provides"),
    click.option("--max-jobs", type=int, help="exit after this many jobs"),
    click.option("--max-idle", type=float, help="exit after this many idle seconds"),
    click.option("--hypervisor",
                 type=click.Choice(["auto", *HYPERVISORS, "none"]),
                 default="auto", show_default=True,
                 help="VM jobs: libvirt if usable, else VirtualBox (auto); require one; "
                      "or none"),
    click.option("--trusted-key", "trusted_keys", multiple=True,
                 type=click.Path(exists=True, path_type=Path),
                 help="Ed25519 public key (file or directory) trusted to sign templates "
                      "and native apps"),
    click.option("--image-quota", "image_quota_mb", type=int, default=20 * 1024,
                 show_default=True, help="MB of cached templates"),
    click.option("--data-quota", "data_quota_mb", type=click.IntRange(1),
                 default=10 * 1024, show_default=True,
                 help="MB of cached job files (app binaries; inputs leave with their "
                      "job)"),
    click.option("--vm-hang-timeout", "vm_hang_timeout_s", type=float, default=600,
                 show_default=True,
                 help="stop a VM that shows no progress for this many seconds"),
    click.option("--allow-native", is_flag=True,
                 help="also run native jobs on this host itself, outside any VM "
                      "(implied by --hypervisor none)"),
    click.option("--max-wall-clock", "max_wall_clock_s", type=WALL_CLOCK, default="24h",
                 show_default=True,
                 help="the longest any job may run here (jobs without a limit get this "
                      "one)"),
    click.option("--allow-unsigned-apps", is_flag=True,
                 help="run native apps that no trusted key signed (not recommended: "
                      "the server alone then decides what runs on this host)"),
    click.option("--max-vm-memory", "max_vm_memory_mb", type=click.IntRange(64),
                 help="MiB of RAM any one VM gets at most [default: half of this "
                      "host's]"),
    click.option("--max-vm-cpus", type=click.IntRange(1),
                 help="vCPUs any one VM gets at most [default: all CPUs but one]"),
    click.option("--max-vm-disk", "max_vm_disk_mb", type=click.IntRange(1),
                 help="MiB of disk any one VM may write [default: 20480, at most the "
                      "free space]"),
    click.option("--vm-cpu-percent", type=click.IntRange(1, 100), default=100,
                 show_default=True, help="share of one host CPU each vCPU may use"),
    click.option("--min-free-disk", "min_free_mb", type=click.IntRange(0), default=256,
                 show_default=True,
                 help="MiB the work dir's disk must keep free for a job to be taken (after "
                      "a job was given back for a full disk: no job for 10 s first)"),
)


def _run_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for opt in reversed(RUN_OPTIONS):
        fn = opt(fn)
    return fn


@worker_group.command("run")
@click.option("--server", "url", help="default: the one in the credential")
@click.option("--ca", type=click.Path(exists=True), help="default: the one in the credential")
@click.option("--credential", type=click.Path(exists=True, path_type=Path),
              help="worker credential file (xwvm worker enroll)")
@click.option("--cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="log in with this certificate instead (with --key, --server and --ca)")
@click.option("--key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="the certificate's private key")
@_run_options
@handle_errors
def worker_run(url: str | None, ca: str | None, credential: Path | None, cert: Path | None,
               key: Path | None, name: str | None, shared_apps: tuple[str, ...],
               trusted_keys: tuple[Path, ...], **options: Any) -> None:
    """Pull and run jobs until stopped (SIGTERM gives the running job back)."""
    _log_to_stderr()
    cred = _credential(url, ca, credential, cert, key)
    opts = WorkerOptions(name=name or platform.node(), shared_apps=list(shared_apps),
                         trusted_keys=list(trusted_keys), **options)
    Worker(cred, opts, server=url, ca=ca).run()


def _log_to_stderr() -> None:
    """Each step of each job and each fault, one line each on stderr (the level from
    XWVM_LOG_LEVEL, INFO by default); nothing secret is ever logged."""
    level = os.environ.get("XWVM_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level if level in logging.getLevelNamesMapping() else "INFO",
                        stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@worker_group.command("nested", context_settings={"ignore_unknown_options": True,
                                                  "help_option_names": []})
@click.argument("agent_args", nargs=-1, type=click.UNPROCESSED)
def worker_nested(agent_args: tuple[str, ...]) -> None:
    """Inside a VM: the nested worker (the appliance's agent, run as root by its init).

    Reads the context (--context, default /run/xwvm/context.json), checks the guest's
    hardening, and runs the job's payload, or a pilot's jobs, as the unprivileged user
    (--user, default xwvm). `xwvm worker nested --help` lists its options."""
    from appliance.agent import main as agent_main
    sys.exit(agent_main(list(agent_args)))
