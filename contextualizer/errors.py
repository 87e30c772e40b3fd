"""Owns the contextualizer's exceptions: one base error carrying a list of issues."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class ValidationIssue:
    """One problem in a document: where it is (a JSON path such as ``$.env.FOO``) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class ContextError(Exception):
    """A context document or context ISO is not acceptable.

    ``issues`` lists every problem found, each naming the offending field, so a
    caller (the server's API layer) can return them all at once. It is a user
    mistake, hence ``http_status`` 400.
    """

    http_status = 400

    def __init__(self, message: str, issues: Iterable[ValidationIssue] = ()) -> None:
        self.issues: list[ValidationIssue] = list(issues)
        detail = "; ".join(str(i) for i in self.issues)
        super().__init__(f"{message}: {detail}" if detail else message)
        self.message = message


class IsoReadError(ContextError):
    """A context ISO cannot be read back: wrong label, missing file, bad content."""


class UnsupportedFormatError(IsoReadError):
    """The ISO's ``xwvm/context.json`` has a ``format`` this reader does not understand."""
