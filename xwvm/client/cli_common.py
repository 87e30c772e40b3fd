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

import click

from xwvm.client import formats
from xwvm.client.sdk import Client
from xwvm.client.session import Session
from xwvm.errors import XwvmError


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
