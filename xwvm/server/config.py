"""Server configuration: defaults, then DATA_DIR/server.yaml, then XWVM_* environment variables.

Every path in a loaded configuration is absolute, so that the server finds the same files
whatever folder it is started from: a relative path in server.yaml is relative to the data
directory, one from the environment or the command line to the current folder; `server
init` writes absolute ones."""

from __future__ import annotations

import dataclasses
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from xwvm.errors import BadRequest
from xwvm.protocol import DEFAULT_WALL_CLOCK_S, WALL_CLOCK_GRACE_S
from xwvm.server.scheduler.health import Breaker

CONFIG_FILE = "server.yaml"
#: Settings that name files (trusted_crl_files: several, comma-separated).
PATH_SETTINGS = ("trusted_ca_file", "trusted_crl_files", "trusted_ca_policy_file",
                 "oidc_ca_file")


@dataclass(frozen=True)
class WallClock:
    """The server's one wall-clock rule, which the reaper, the worker and the delegated
    token all follow: a job that names no limit gets ``default_s`` (sent to the worker in
    its description); the reaper ends a job ``grace_s`` after its limit, when the token of
    its nested worker ends too. ServerConfig sets both."""

    default_s: int = DEFAULT_WALL_CLOCK_S
    grace_s: int = WALL_CLOCK_GRACE_S


@dataclass
class ServerConfig:
    data_dir: Path
    db_url: str = ""
    public_name: str = field(default_factory=socket.gethostname)
    alive_period_s: int = 60
    token_lifetime_s: int = 12 * 3600
    worker_token_lifetime_s: int = 24 * 3600
    max_upload_bytes: int = 8 * 1024**3
    max_json_bytes: int = 1024**2
    default_max_retries: int = 10
    idle_retry_s: int = 10
    reap_interval_s: float = 5.0
    # The reaper ends a running job after its wall-clock limit, or this default when it
    # names none, plus the grace (the worker's own report should come first). The protocol's
    # values by default, which the worker and the delegated token's lifetime use.
    default_wall_clock_s: int = DEFAULT_WALL_CLOCK_S
    wall_clock_grace_s: int = WALL_CLOCK_GRACE_S
    # A host's circuit breaker (scheduler/health.py): this many infrastructure faults in a
    # row pause it for host_first_pause_s, doubling with each further one, at most
    # host_max_pause_s.
    host_faults_to_pause: int = 3
    host_first_pause_s: int = 60
    host_max_pause_s: int = 3600

    @property
    def wall_clock(self) -> WallClock:
        return WallClock(self.default_wall_clock_s, self.wall_clock_grace_s)

    @property
    def breaker(self) -> Breaker:
        return Breaker(self.host_faults_to_pause, self.host_first_pause_s,
                       self.host_max_pause_s)
    # A request body must keep coming: it gets this many seconds, plus one second for every
    # body_min_rate bytes received (Apache mod_reqtimeout's rule), else 408.
    body_timeout_s: int = 20
    body_min_rate: int = 500
    # Login throttling: this many failures within the window refuse further attempts (429):
    # per (account, address) pair, per address, and per account from all addresses (high,
    # so that an attacker's guesses do not lock the real user out).
    login_max_failures: int = 5
    login_max_failures_per_address: int = 30
    login_max_failures_per_account: int = 50
    login_window_s: int = 300
    # X.509: client certificates issued by the server CA, extra trusted CAs (grid CAs, PEM
    # bundle) and their CRL files (PEM or DER, comma-separated), challenge lifetime.
    client_cert_days: int = 365
    trusted_ca_file: str = ""
    trusted_crl_files: str = ""
    # Which subject names each outside CA may sign (YAML: [{ca: DN, subjects: [glob...]}]);
    # a CA it does not name may sign only names no other CA's certificate mapped first.
    trusted_ca_policy_file: str = ""
    x509_challenge_s: int = 120
    # OpenID Connect: the issuer (discovery at ISSUER/.well-known/openid-configuration),
    # this server's client id and secret there, and a CA bundle for the issuer's TLS.
    oidc_issuer: str = ""
    oidc_client_id: str = ""
    oidc_client_secret: str = ""
    oidc_scopes: str = "openid profile email"
    oidc_ca_file: str = ""
    oidc_state_s: int = 600
    # Anonymous /auth/oidc/start calls: per address within login_window_s, and unfinished
    # logins (states) kept at once; the discovery document is cached this long.
    oidc_starts_per_address: int = 20
    oidc_max_pending: int = 1000
    oidc_discovery_cache_s: int = 3600

    def __post_init__(self) -> None:
        self.data_dir = Path(os.path.abspath(self.data_dir))
        if not self.db_url:
            self.db_url = f"sqlite:///{self.data_dir / 'xwvm.db'}"

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def ca_cert(self) -> Path:
        return self.data_dir / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.data_dir / "ca-key.pem"

    @property
    def server_cert(self) -> Path:
        return self.data_dir / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.data_dir / "server-key.pem"

    def to_file_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.pop("data_dir")
        return out


def _coerce(name: str, raw: Any, typ: Any) -> Any:
    try:
        if typ in (int, "int"):
            return int(raw)
        if typ in (float, "float"):
            return float(raw)
        return str(raw)
    except (TypeError, ValueError):
        raise BadRequest(f"server setting {name}: {raw!r} is not a valid {typ}",
                         code="bad_config") from None


def absolute_db_url(url: str, base: Path) -> str:
    """``url`` with a relative SQLite file made absolute under ``base`` (other databases,
    and SQLite in memory, as they are); a string that is no database URL is refused."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise BadRequest(f"server setting db_url: {url!r} is not a database URL (for example "
                         "postgresql+psycopg://xwvm@dbhost/xwvm or sqlite:////srv/xwvm/xwvm.db)",
                         code="bad_config") from None
    db = parsed.database
    if (parsed.get_backend_name() != "sqlite" or not db or db == ":memory:"
            or db.startswith("file:") or Path(db).is_absolute()):
        return url
    return parsed.set(database=os.path.normpath(base / db)).render_as_string(hide_password=False)


def absolute_paths(values: dict[str, Any], base: Path) -> dict[str, Any]:
    """``values`` (settings as read) with the database file and every file setting made
    absolute under ``base``."""
    out = dict(values)
    if out.get("db_url"):
        out["db_url"] = absolute_db_url(str(out["db_url"]), base)
    for name in PATH_SETTINGS:
        if out.get(name):
            out[name] = ",".join(os.path.normpath(base / p.strip())
                                 for p in str(out[name]).split(",") if p.strip())
    return out


def _read_file(path: Path) -> dict[str, Any]:
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise BadRequest(f"{path} is not valid YAML: {e}", code="bad_config") from None
    if not isinstance(values, dict):
        raise BadRequest(f"{path} must hold a mapping of settings", code="bad_config")
    return values


def load(data_dir: Path, **overrides: Any) -> ServerConfig:
    data_dir = Path(os.path.abspath(data_dir))
    path = data_dir / CONFIG_FILE
    values = absolute_paths(_read_file(path), data_dir) if path.is_file() else {}
    fields = {f.name: f.type for f in dataclasses.fields(ServerConfig) if f.name != "data_dir"}
    given = {f"XWVM_{name.upper()}": name for name in fields}
    outside = {name: os.environ[env] for env, name in given.items() if env in os.environ}
    outside.update({k: v for k, v in overrides.items() if v is not None})
    values.update(absolute_paths(outside, Path.cwd()))
    unknown = set(values) - set(fields)
    if unknown:
        raise BadRequest(f"unknown server settings in {path}: {', '.join(sorted(unknown))}",
                         code="bad_config")
    typed = {k: _coerce(k, v, fields[k]) for k, v in values.items()}
    return ServerConfig(data_dir=data_dir, **typed)


def save(cfg: ServerConfig) -> None:
    path = cfg.data_dir / CONFIG_FILE
    # 0600: it may hold the OIDC client secret and the database URL with its password.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(yaml.safe_dump(cfg.to_file_dict(), sort_keys=True))
