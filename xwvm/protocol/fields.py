"""Reading one field of a JSON document with its type checked: the messages' ``from_json``.

Errors name the field (``job.files[2].sha256``) and the type expected, never the value
(a value may be a secret, e.g. a delegated token, or hostile)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")
_MISSING = object()


def _is(value: Any, kind: type) -> bool:
    if kind is int:  # a JSON true is not a count
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _kind_name(kind: type) -> str:
    return {str: "a string", int: "an integer", bool: "a boolean", dict: "an object",
            list: "an array"}.get(kind, kind.__name__)


def document(doc: Any, where: str) -> Mapping[str, Any]:
    """``doc`` itself, if it is a JSON object."""
    if not isinstance(doc, Mapping):
        raise ValueError(f"{where}: expected an object")
    return doc


def req(doc: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    """A required field of type ``kind`` (not null)."""
    value = doc.get(key, _MISSING)
    if value is _MISSING:
        raise ValueError(f"{where}.{key}: missing")
    if not _is(value, kind):
        raise ValueError(f"{where}.{key}: expected {_kind_name(kind)}")
    return value


def opt(doc: Mapping[str, Any], key: str, kind: type, where: str,
        default: Any = None) -> Any:
    """An optional field of type ``kind``: ``default`` when absent or null."""
    value = doc.get(key)
    if value is None:
        return default
    if not _is(value, kind):
        raise ValueError(f"{where}.{key}: expected {_kind_name(kind)} or null")
    return value


def str_list(doc: Mapping[str, Any], key: str, where: str,
             required: bool = False) -> tuple[str, ...]:
    """An array of strings (absent: empty, unless ``required``)."""
    items = req(doc, key, list, where) if required else opt(doc, key, list, where, [])
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise ValueError(f"{where}.{key}[{i}]: expected a string")
    return tuple(items)


def str_map(doc: Mapping[str, Any], key: str, where: str) -> dict[str, str]:
    """An object whose values are strings (absent: empty)."""
    items = opt(doc, key, dict, where, {})
    for value in items.values():
        if not isinstance(value, str):
            raise ValueError(f"{where}.{key}: every value must be a string")
    return dict(items)


def objects(doc: Mapping[str, Any], key: str, where: str,
            read: Callable[[Any, str], T], required: bool = False) -> tuple[T, ...]:
    """An array of objects, each read by ``read(item, its_path)``."""
    items = req(doc, key, list, where) if required else opt(doc, key, list, where, [])
    return tuple(read(item, f"{where}.{key}[{i}]") for i, item in enumerate(items))


def dicts(doc: Mapping[str, Any], key: str, where: str) -> tuple[dict[str, Any], ...]:
    """An array of plain JSON objects kept as they are (e.g. signatures)."""
    return objects(doc, key, where, lambda item, at: dict(document(item, at)))


def choice(doc: Mapping[str, Any], key: str, where: str, vocabulary: Callable[[str], T],
           default: T) -> T:
    """A string from a vocabulary (a StrEnum); ``default`` when absent or null."""
    value = opt(doc, key, str, where)
    if value is None:
        return default
    try:
        return vocabulary(value)
    except ValueError:
        raise ValueError(f"{where}.{key}: not a known value") from None
