"""Owns validation of user-supplied context data against ``schema/context.schema.json``.

``validate_user_context`` returns every problem as a ``ValidationIssue`` (a
JSON path such as ``$.ssh_authorized_keys[1]`` and a message); it never stops at
the first. Messages never repeat the offending value, because values (env,
file contents) may be secrets and errors get logged. Checks that JSON Schema
cannot express live here too: the serialized size, file sizes in bytes,
duplicate paths, and SSH keys whose decoded blob must carry the declared type
and load as a real key.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_ssh_public_key

from contextualizer.errors import ContextError, ValidationIssue
from contextualizer.model import GuestFile, NetworkPolicy, UserContext
from contextualizer.schema_errors import RULES, Wording, json_path, schema_issues

#: Largest accepted user context, as compact UTF-8 JSON.
MAX_DOCUMENT_BYTES = 256 * 1024
#: Largest content of one extra file, in UTF-8 bytes.
MAX_FILE_BYTES = 64 * 1024
#: Smallest accepted RSA modulus.
MIN_RSA_BITS = 2048
ALLOWED_KEY_TYPES = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
)


@cache
def user_context_schema() -> dict[str, Any]:
    """The user-context JSON Schema (draft 2020-12), checked once when first loaded."""
    text = resources.files("contextualizer.schema").joinpath("context.schema.json").read_text()
    schema = json.loads(text)
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


@cache
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(user_context_schema())


def validate_user_context(doc: Any) -> list[ValidationIssue]:
    """Every problem in a user context document, sorted by path; empty when it is valid.

    A document over ``MAX_DOCUMENT_BYTES`` gets that one issue and is not
    examined further.
    """
    try:
        size = len(json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    except (TypeError, ValueError) as exc:
        return [ValidationIssue("$", f"is not a JSON document: {exc}")]
    if size > MAX_DOCUMENT_BYTES:
        return [ValidationIssue("$", f"document is {size} bytes, more than {MAX_DOCUMENT_BYTES}")]
    issues = set(_schema_issues(doc))
    if isinstance(doc, dict):
        issues.update(_key_issues(doc.get("ssh_authorized_keys")))
        issues.update(_file_issues(doc.get("files")))
    return sorted(issues)


def parse_user_context(doc: Any) -> UserContext:
    """Validate ``doc`` and return it typed; raises ``ContextError`` listing every issue."""
    issues = validate_user_context(doc)
    if issues:
        raise ContextError("invalid context data", issues)
    return UserContext(
        ssh_authorized_keys=tuple(doc.get("ssh_authorized_keys", ())),
        env=dict(doc.get("env", {})),
        network=NetworkPolicy(doc.get("network", NetworkPolicy.SERVER.value)),
        hostname=doc.get("hostname"),
        files=tuple(
            GuestFile(path=f["path"], content=f["content"], mode=f.get("mode", "0644"))
            for f in doc.get("files", ())
        ),
    )


#: The context's wording: the document defaults, plus its one ``not`` rule (file paths).
_WORDING = Wording(rules={**RULES, "not": "must not contain '.' or '..' path segments"})


def _property_name(error: jsonschema.ValidationError) -> ValidationIssue | None:
    """jsonschema reports a bad property name at the parent object: name the property."""
    if "propertyNames" not in error.absolute_schema_path:
        return None
    return ValidationIssue(
        json_path([*error.absolute_path, error.instance]),
        "is not a valid name (letters, digits and _, not starting with a digit; "
        "at most 128 characters)",
    )


def _schema_issues(doc: Any) -> Iterator[ValidationIssue]:
    return schema_issues(_validator().iter_errors(doc), _WORDING, _property_name)


def _key_issues(keys: Any) -> Iterator[ValidationIssue]:
    if not isinstance(keys, list):
        return
    for i, key in enumerate(keys):
        if isinstance(key, str) and key.split(" ", 1)[0] in ALLOWED_KEY_TYPES and " " in key:
            problem = ssh_key_problem(key)
            if problem:
                yield ValidationIssue(json_path(["ssh_authorized_keys", i]), problem)


def ssh_key_problem(key: str) -> str | None:
    """Why an OpenSSH public key line is unacceptable, or ``None`` if it is fine.

    The base64 blob must decode, start with the declared key type, and load
    as a key of that type; RSA keys need at least ``MIN_RSA_BITS`` bits.
    """
    parts = key.split(" ")
    declared = parts[0]
    if declared not in ALLOWED_KEY_TYPES:
        return f"key type {declared!r} is not one of {', '.join(ALLOWED_KEY_TYPES)}"
    if len(parts) < 2:
        return "has no key data"
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except binascii.Error:
        return "key data is not valid base64"
    length = int.from_bytes(blob[:4], "big") if len(blob) >= 4 else -1
    embedded = blob[4 : 4 + length] if 0 <= length <= len(blob) - 4 else b""
    if embedded != declared.encode():
        shown = embedded.decode("ascii", "replace")[:40] or "unreadable"
        return f"declares {declared} but the key data is of type {shown}"
    try:
        public_key = load_ssh_public_key(f"{declared} {parts[1]}".encode())
    except (ValueError, UnsupportedAlgorithm) as exc:
        return f"is not a valid {declared} key ({exc})"
    if isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size < MIN_RSA_BITS:
        return f"RSA key has {public_key.key_size} bits, fewer than {MIN_RSA_BITS}"
    return None


def _file_issues(files: Any) -> Iterator[ValidationIssue]:
    if not isinstance(files, list):
        return
    seen: set[str] = set()
    for i, item in enumerate(files):
        if not isinstance(item, dict):
            continue
        content, path = item.get("content"), item.get("path")
        if isinstance(content, str) and len(content.encode("utf-8")) > MAX_FILE_BYTES:
            yield ValidationIssue(
                json_path(["files", i, "content"]), f"is larger than {MAX_FILE_BYTES} bytes"
            )
        if isinstance(path, str):
            if path in seen:
                yield ValidationIssue(json_path(["files", i, "path"]), "is given twice")
            seen.add(path)
