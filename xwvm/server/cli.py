"""`xwvm server init|run`: the server's command group, added to the root command by
:mod:`xwvm.cli`.

It imports the server's modules at once, so that a host without the server's dependencies
(Flask, SQLAlchemy, gunicorn) fails here with an ImportError, which the root command turns
into "the server group is unavailable". Project errors raised by these commands are printed
by the root command (one line, exit status 1).
"""

from __future__ import annotations

from pathlib import Path

import click

# `server run` loads the Flask app in gunicorn's workers; importing it here too makes a host
# without Flask find out at once (an unavailable group), not in each worker process.
import xwvm.server.app  # noqa: F401
from xwvm.server.init import init, initialized
from xwvm.server.pki import fingerprint
from xwvm.server.wsgi import run


def _secret(path: str) -> str:
    """The first secret in a file (surrounding whitespace stripped); an empty file is a
    usage mistake."""
    text = Path(path).read_text().strip()
    if not text:
        raise click.ClickException(f"{path} is empty")
    return text


@click.group("server")
def server_group() -> None:
    """Initialize and run the server."""


@server_group.command("init")
@click.option("--data-dir", required=True,
              type=click.Path(file_okay=False, resolve_path=True, path_type=Path),
              help="where the server keeps its files (made if missing; stored as an "
                   "absolute path)")
@click.option("--admin-password-file", required=True, type=click.Path(exists=True))
@click.option("--admin-login", default="admin", show_default=True)
@click.option("--db", "db_url",
              help="database URL, e.g. postgresql+psycopg://xwvm@dbhost/xwvm "
                   "(default: SQLite in the data dir)")
@click.option("--public-name", help="host name in xw:// URIs (default: this host's name)")
@click.option("--hostname", "hostnames", multiple=True,
              help="names/addresses for the server certificate (repeatable)")
@click.option("--alive-period", type=int, help="worker heartbeat period in seconds")
def server_init(data_dir: Path, admin_password_file: str, admin_login: str, db_url: str | None,
                public_name: str | None, hostnames: tuple[str, ...],
                alive_period: int | None) -> None:
    """Create the database, the CA (DATA_DIR/ca.pem), the server certificate and the admin."""
    cfg = init(data_dir, _secret(admin_password_file), db_url=db_url,
               admin_login=admin_login, hostnames=list(hostnames) or None,
               public_name=public_name, alive_period_s=alive_period)
    click.echo(f"initialized {data_dir}")
    click.echo(f"  CA certificate: {cfg.ca_cert}")
    click.echo(f"  CA SHA-256 fingerprint: {fingerprint(cfg.ca_cert.read_bytes())}")
    click.echo(f"  admin login: {admin_login}")


@server_group.command("run")
@click.option("--data-dir", required=True,
              type=click.Path(exists=True, file_okay=False, resolve_path=True, path_type=Path),
              help="a data directory made by 'xwvm server init'")
@click.option("--bind", default="127.0.0.1:4322", show_default=True)
@click.option("--workers", type=int, help="server processes (default: number of CPUs, min 2)")
@click.option("--threads", type=int, default=8, show_default=True)
@click.option("--db", "db_url", help="database URL (overrides server.yaml)")
def server_run(data_dir: Path, bind: str, workers: int | None, threads: int,
               db_url: str | None) -> None:
    """Serve the API over TLS with gunicorn (refused for a data directory that 'xwvm server
    init' did not make)."""
    cfg = initialized(data_dir, db_url)
    run(cfg, bind, workers=workers, threads=threads)
