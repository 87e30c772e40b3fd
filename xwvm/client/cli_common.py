"""What every `xwvm` command module shares: error reporting, the logged-in client,
output formats, progress bars and NAME=VALUE parsing."""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import click

from xwvm.client import formats
from xwvm.client.sdk import Client
from xwvm.client.session import Session
from xwvm.errors import XwvmError


def fail(message: str) -> None:
    raise click.ClickException(message)


def path_ref(ref: str) -> str:
    """What names an object in a URL path: the uid of an ``xw://SERVER/UID`` reference (a
    path cannot hold one; the server reads them in request bodies itself), else ``ref``
    itself, an id or a name, which the server resolves (ids first, and only by id)."""
    return ref.rstrip("/").rsplit("/", 1)[-1] if ref[:5].lower() == "xw://" else ref


def path_refs(_ctx: click.Context, _param: click.Parameter,
              value: str | tuple[str, ...]) -> str | tuple[str, ...]:
    """A click callback: :func:`path_ref` of one REF argument or of each of several."""
    return path_ref(value) if isinstance(value, str) else tuple(map(path_ref, value))


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


def output(rows: list[dict[str, Any]], columns: tuple[str, ...], fmt: str, kind: str) -> None:
    click.echo(formats.render(rows, columns, fmt, kind))


def parse_env(pairs: Iterable[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        if "=" not in pair:
            fail(f"--env {pair!r}: use NAME=VALUE")
        name, value = pair.split("=", 1)
        env[name] = value
    return env
