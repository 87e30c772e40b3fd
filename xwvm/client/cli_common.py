"""What every `xwvm` command module shares (the user's, and the worker's): error reporting,
the logged-in client, output formats, progress bars, secrets read from files, durations and
NAME=VALUE parsing."""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from xwvm.client import formats
from xwvm.client.sdk import ApiError, Client
from xwvm.client.session import Session
from xwvm.errors import XwvmError
from xwvm.ids import canonical_uid


def fail(message: str) -> None:
    raise click.ClickException(message)


def read_secret(path: str) -> str:
    """A password or token kept in a file (surrounding whitespace stripped); never empty."""
    text = Path(path).read_text().strip()
    if not text:
        fail(f"{path} is empty")
    return text


class WallClock(click.ParamType):
    """A duration in seconds: 3600, or with a unit: 90s, 30m, 2h, 1d."""

    name = "duration"
    UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().lower()
        unit = self.UNITS.get(text[-1:]) if text else None
        try:
            seconds = int(float(text[:-1]) * unit) if unit else int(text)
        except ValueError:
            self.fail(f"{value!r} is not a duration (3600, 90s, 30m, 2h, 1d)", param, ctx)
        if seconds <= 0:
            self.fail("a duration must be positive", param, ctx)
        return seconds


WALL_CLOCK = WallClock()


# --- what names an object: an id, an xw:// URI of this server, or (some kinds) a name -----

#: What each kind of reference is called in messages.
WHAT = {"job": "job", "data": "data", "app": "app", "template": "template",
        "context": "context", "host": "host", "object": "object"}
#: Kinds whose names the server resolves itself (own, group, administrators' names).
SERVER_NAMED = frozenset({"app", "template"})
_WHOAMI: dict[tuple[str, str | None], dict[str, Any]] = {}


def whoami(c: Client) -> dict[str, Any]:
    """The logged-in user (asked once per process and login)."""
    key = (c.server, c.token)
    if key not in _WHOAMI:
        _WHOAMI[key] = c.whoami()
    return _WHOAMI[key]


def server_names(c: Client) -> set[str]:
    """What the HOST of an ``xw://HOST/UID`` URI may be for this server: its public name
    (what its listings print) or the host of the URL one logged in to."""
    uri = str(whoami(c).get("uri") or "")
    public = uri[5:].rsplit("/", 1)[0] if uri[:5].lower() == "xw://" else ""
    return {n.lower() for n in (public, urlsplit(c.server).hostname or "") if n}


def uri_uid(c: Client | None, ref: str, kind: str) -> str | None:
    """The uid that ``ref`` names when it is an id (a UUID, or an ``xw://HOST/UID`` URI of
    this server: another server's is refused), else None (``ref`` may be a name)."""
    if ref[:5].lower() != "xw://":
        return canonical_uid(ref)
    host, _, uid = ref[5:].rstrip("/").rpartition("/")
    canonical = canonical_uid(uid) if host else None
    if canonical is None:
        fail(f"{ref}: an xw:// URI is xw://SERVER/UID")
    if c is not None and host.lower() not in server_names(c):
        fail(f"{ref} names an object of server {host}, not of {c.server} (known there as "
             f"{', '.join(sorted(server_names(c)))}): log in to that server to use it")
    return canonical


def _own_matches(c: Client, ref: str, kind: str) -> tuple[list[str], list[str]]:
    """The uids of one's own ``kind`` (data or context) objects named ``ref``, and of all
    those one can read by that name."""
    rows = c.list_data() if kind == "data" else c.list_contexts()
    named = [r for r in rows if r.get("name") == ref]
    me = whoami(c)["uid"]
    return [str(r["uid"]) for r in named if r.get("owner") == me], [str(r["uid"]) for r in named]


def _own_named(c: Client, ref: str, kind: str) -> str:
    """The uid of the one ``kind`` (data or context) of one's own named ``ref``."""
    mine, named = _own_matches(c, ref, kind)
    if len(mine) == 1:
        return mine[0]
    if mine:
        fail(f"you have {len(mine)} {kind} objects named {ref}: {', '.join(mine)}; give one "
             "by its id")
    others = f"; others' of that name: {', '.join(named)} (give the id)" if named else ""
    fail(f"no {kind} of yours is named {ref}{others}")
    raise AssertionError("unreachable")


def _object_named(c: Client, ref: str) -> str:
    """chmod NAME: the one app, template, data object or context of that name."""
    found: list[tuple[str, str]] = []
    for kind, get in (("app", c.get_app), ("template", c.get_template)):
        try:
            found.append((kind, str(get(ref)["uid"])))
        except ApiError as e:
            if e.status not in (400, 403, 404):
                raise
    for kind in ("data", "context"):
        found += [(kind, uid) for uid in _own_matches(c, ref, kind)[0]]
    if len(found) == 1:
        return found[0][1]
    if found:
        fail(f"{ref} names several objects: {', '.join(f'{k} {u}' for k, u in found)}; "
             "give one by its id")
    fail(f"no app, template, data or context of yours is named {ref}")
    raise AssertionError("unreachable")


def resolve(c: Client, ref: str, kind: str) -> str:
    """One rule for every command: an id or an ``xw://HOST/UID`` URI of this server names
    that object; a name resolves for apps and templates (by the server: yours, your
    group's, the administrators'), data and contexts (one of your own) and chmod (the one
    object of those kinds with that name). Jobs and hosts are named by id only."""
    uid = uri_uid(c, ref, kind)
    if uid is not None:
        return uid
    if kind in SERVER_NAMED:
        return ref
    if kind in ("data", "context"):
        return _own_named(c, ref, kind)
    if kind == "object":
        return _object_named(c, ref)
    fail(f"{ref} names no {WHAT[kind]}: it is not a UUID (nor xw://SERVER/UUID as listings "
         "print)")
    raise AssertionError("unreachable")


def refs(kind: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A click callback resolving one REF argument (or each of several) with
    :func:`resolve`, all of them before the command does anything."""
    def callback(_ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
        if value is None or value == ():
            return value
        try:
            c = client()
            if isinstance(value, str):
                return resolve(c, value, kind)
            return tuple(resolve(c, v, kind) for v in value)
        except XwvmError as e:
            raise click.ClickException(error_text(e)) from None
    return callback


def error_text(e: XwvmError) -> str:
    """The message and code, plus one line per (path, message) detail the server gave."""
    text = f"{e.message} [{e.code}]"
    if isinstance(e.details, list):
        text += "".join(f"\n  {d['path']}: {d.get('message', '')}" for d in e.details
                        if isinstance(d, dict) and "path" in d)
    return text


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Project errors and OS errors become one clear line (exit status 1), no traceback."""
    @functools.wraps(fn)
    def wrapper(*a: Any, **kw: Any) -> Any:
        try:
            return fn(*a, **kw)
        except XwvmError as e:
            raise click.ClickException(error_text(e)) from None
        except OSError as e:
            raise click.ClickException(str(e)) from None
    return wrapper


def client() -> Client:
    return Session.load().client()


@contextlib.contextmanager
def progress_bar(total: int, desc: str) -> Iterator[Callable[[int], None] | None]:
    """A tqdm bar on a terminal; nothing when stderr is not one (scripts, CI)."""
    if not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm
    with tqdm(total=total, desc=desc, unit="B", unit_scale=True, leave=False) as bar:
        yield bar.update


def format_option(choices: Iterable[str] = formats.FORMATS) -> Callable[..., Any]:
    return click.option("--format", "fmt", type=click.Choice(tuple(choices)),
                        default="table", show_default=True, help="output format")


# --- names for ids in tables -------------------------------------------------------------

def _lister(c: Client, column: str) -> Callable[[], list[dict[str, Any]]]:
    return {"owner": c.list_users, "worker": c.list_users, "group": c.list_groups,
            "app": c.list_apps, "host": c.list_hosts, "expected_host": c.list_hosts,
            "template": c.list_templates}[column]


def _label(row: dict[str, Any], column: str) -> str:
    if column in ("owner", "worker"):
        return str(row["login"])
    if column == "template":
        return f"{row['name']}:{row['version']}"
    return str(row["name"])


def with_names(c: Client, rows: list[dict[str, Any]],
               columns: Iterable[str]) -> list[dict[str, Any]]:
    """``rows`` with the ids of owners, groups, apps, hosts and templates in ``columns``
    replaced by their names (each kind listed once; an id one cannot list stays an id)."""
    named: dict[str, dict[str, str]] = {}
    for col in columns:
        if col not in NAMED_COLUMNS or not any(r.get(col) for r in rows):
            continue
        try:
            listed = _lister(c, col)()
        except ApiError:
            listed = []
        named[col] = {str(r["uid"]): _label(r, col) for r in listed}
        if col in ("owner", "worker"):
            me = whoami(c)
            named[col][str(me["uid"])] = str(me["login"])
    return [{**r, **{col: names.get(str(r[col]), r[col]) for col, names in named.items()
                     if r.get(col)}} for r in rows]


NAMED_COLUMNS = ("owner", "worker", "group", "app", "host", "expected_host", "template")


def output(rows: list[dict[str, Any]], columns: tuple[str, ...], fmt: str, kind: str,
           c: Client | None = None) -> None:
    """``rows`` in ``fmt``; a table shows names for ids (``c``: the client to ask)."""
    if fmt == "table" and c is not None and rows:
        rows = with_names(c, rows, columns)
    click.echo(formats.render(rows, columns, fmt, kind))


def parse_env(pairs: Iterable[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        if "=" not in pair:
            fail(f"--env {pair!r}: use NAME=VALUE")
        name, value = pair.split("=", 1)
        env[name] = value
    return env
