"""Owns the one JSON-Schema error formatter: every failed rule becomes a ``ValidationIssue``
(where, and which rule), worded from the schema's side only. jsonschema's own messages
quote the submitted value, and values may be secrets that end up in logs.

Callers differ only in data: a :class:`Wording` (how a path is written, one message per
rule, whether unknown and missing fields are listed one by one) and, for rules that a
schema's ``$defs`` give a meaning, a ``special`` hook. The user context
(:mod:`contextualizer.validation`), template specs (``xwvm.client.imagebuild.spec``) and the
server's request bodies (``xwvm.server.api.base``) all go through :func:`schema_issues`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jsonschema import ValidationError

from contextualizer.errors import ValidationIssue

#: A message: a template filled with the rule's value from the schema, or a function of the
#: error (it must not read ``error.instance`` values into the text).
Message = str | Callable[[ValidationError], str]
#: A caller's own issue for an error, or None to word it by the rules.
Special = Callable[[ValidationError], ValidationIssue | None]

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SHORT_NAME = re.compile(r"^[A-Za-z0-9_.:@+-]{1,64}\Z")


def json_path(parts: Iterable[str | int]) -> str:
    """``["env", "1X"]`` -> ``$.env["1X"]``; ``["files", 0, "path"]`` -> ``$.files[0].path``."""
    out = "$"
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENTIFIER.match(part):
            out += f".{part}"
        else:
            out += f"[{json.dumps(part)}]"
    return out


def short_name(key: Any) -> str:
    """A key or index as an API error may show it: a short plain name, else an ellipsis."""
    return str(key) if _SHORT_NAME.match(str(key)) else "…"


def slash_path(parts: Iterable[str | int]) -> str:
    """``["a", 0, "b"]`` -> ``/a/0/b``, each part shortened by :func:`short_name`."""
    return "/" + "/".join(short_name(x) for x in parts)


def _one_of(error: ValidationError) -> str:
    return f"must be one of: {', '.join(map(str, error.validator_value))}"


#: The wording of documents' errors (contexts, template specs).
RULES: Mapping[str, Message] = {
    "type": "must be of type {}",
    "enum": _one_of,
    "const": lambda e: f"must be {json.dumps(e.validator_value)}",
    "pattern": "does not match the pattern {}",
    "maxLength": "is longer than {} characters",
    "minLength": "is shorter than {} characters",
    "minimum": "must be at least {}",
    "maximum": "must be at most {}",
    "minItems": "must have at least {} item(s)",
    "maxItems": "has more than {} items",
    "maxProperties": "has more than {} entries",
    "uniqueItems": "has duplicate items",
}


@dataclass(frozen=True)
class Wording:
    """How one family of documents words its errors."""

    rules: Mapping[str, Message] = field(default_factory=lambda: RULES)
    path: Callable[[Sequence[Any]], str] = json_path
    #: One issue per unknown or missing field, at that field's path.
    per_field: bool = True
    #: The message of a rule the table lacks (``{rule}``: the rule's name).
    fallback: str = "is invalid ({rule})"

    def message(self, error: ValidationError) -> str:
        rule = str(error.validator)
        text = self.rules.get(rule)
        if text is None:
            return self.fallback.format(rule=rule)
        return text(error) if callable(text) else text.format(error.validator_value)

    def with_rules(self, **rules: Message) -> Wording:
        return Wording({**self.rules, **rules}, self.path, self.per_field, self.fallback)


def schema_issues(errors: Iterable[ValidationError], wording: Wording = Wording(),
                  special: Special | None = None) -> Iterator[ValidationIssue]:
    """The issues of jsonschema's ``errors``, in their order."""
    for error in errors:
        issue = special(error) if special is not None else None
        if issue is not None:
            yield issue
        elif wording.per_field and error.validator in ("additionalProperties", "required"):
            yield from _field_issues(error, wording)
        else:
            yield ValidationIssue(wording.path(list(error.absolute_path)),
                                  wording.message(error))


def _field_issues(error: ValidationError, wording: Wording) -> Iterator[ValidationIssue]:
    path = list(error.absolute_path)
    if error.validator == "additionalProperties":
        known = set(error.schema.get("properties", {}))
        for name in sorted(set(error.instance) - known):
            yield ValidationIssue(wording.path([*path, name]), "unknown field")
    else:
        for name in error.validator_value:
            if name not in error.instance:
                yield ValidationIssue(wording.path([*path, name]), "missing required field")


# --- the API's wording (request bodies) ------------------------------------------------------

def _not_of_type(error: ValidationError) -> str:
    want = error.validator_value
    types = want if isinstance(want, list) else [want]
    return "is not of type " + " or ".join(repr(t) for t in types)


def _not_allowed(error: ValidationError) -> str:
    schema, instance = error.schema, error.instance
    if not isinstance(instance, dict):
        return "does not satisfy the schema's 'additionalProperties' rule"
    props, patterns = schema.get("properties", {}), schema.get("patternProperties", {})
    extra = [short_name(k) for k in instance
             if k not in props and not any(re.search(p, k) for p in patterns)]
    allowed = ", ".join(props) or "none"
    return (f"Additional properties are not allowed ({', '.join(map(repr, extra))} "
            f"{'was' if len(extra) == 1 else 'were'} unexpected; allowed: {allowed})")


#: The server's request bodies: slash paths, one detail per failed rule.
API = Wording(
    rules={
        "type": _not_of_type,
        # "'NAME' is a required property": the name is the schema's, not the client's
        "required": lambda e: e.message,
        "additionalProperties": _not_allowed,
        "minLength": "is shorter than {} characters", "maxLength": "is longer than {} characters",
        "minimum": "is less than the minimum of {}", "maximum": "is more than the maximum of {}",
        "exclusiveMinimum": "must be more than {}", "exclusiveMaximum": "must be less than {}",
        "minItems": "has fewer than {} items", "maxItems": "has more than {} items",
        "minProperties": "has fewer than {} properties",
        "maxProperties": "has more than {} properties",
        "pattern": "does not match {!r}", "format": "is not a valid {}",
        "enum": "is not one of {}", "const": "is not {!r}", "uniqueItems": "has non-unique items",
    },
    path=slash_path,
    per_field=False,
    fallback="does not satisfy the schema's {rule!r} rule",
)
