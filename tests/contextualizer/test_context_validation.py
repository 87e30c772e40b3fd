"""Tests of user-context validation: every error names its field, all errors are reported."""

from __future__ import annotations

import base64
import json

import jsonschema
import pytest
from ctx_testdata import ECDSA_KEY, ED25519_KEY, user_doc

from contextualizer import ContextError, ValidationIssue, parse_user_context, validate_user_context
from contextualizer.validation import MAX_DOCUMENT_BYTES, json_path, user_context_schema
from xwvm.protocol.vocab import NetworkPolicy


def paths(doc: object) -> list[str]:
    return [i.path for i in validate_user_context(doc)]


def only_issue(doc: object) -> ValidationIssue:
    issues = validate_user_context(doc)
    assert len(issues) == 1, issues
    return issues[0]


def test_the_schemas_network_policies_are_the_protocols() -> None:
    """The schema file names the policies the worker and the guest know, in their order."""
    network = user_context_schema()["properties"]["network"]
    assert network["enum"] == [p.value for p in NetworkPolicy]


def test_schema_is_draft_2020_12_and_closed() -> None:
    schema = user_context_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["additionalProperties"] is False
    assert schema["$defs"]["file"]["additionalProperties"] is False
    jsonschema.Draft202012Validator.check_schema(schema)


def test_valid_documents() -> None:
    assert validate_user_context(user_doc()) == []
    assert validate_user_context({}) == []


def test_valid_rsa_key(rsa_key: str) -> None:
    assert validate_user_context({"ssh_authorized_keys": [rsa_key]}) == []


def test_not_an_object() -> None:
    assert only_issue([1, 2]) == ValidationIssue("$", "must be of type object")


def test_not_json_serializable() -> None:
    assert only_issue({"env": {"A": {1, 2}}}).path == "$"


# --- ssh keys -------------------------------------------------------------------------------


def test_bad_key_type() -> None:
    blob = ED25519_KEY.split()[1]
    issue = only_issue({"ssh_authorized_keys": [ED25519_KEY, f"ssh-dss {blob} old"]})
    assert issue.path == "$.ssh_authorized_keys[1]"
    assert "pattern" in issue.message


def test_key_blob_of_another_type() -> None:
    ed_blob = ED25519_KEY.split()[1]
    issue = only_issue({"ssh_authorized_keys": [f"ssh-rsa {ed_blob} liar"]})
    assert issue.path == "$.ssh_authorized_keys[0]"
    assert issue.message == "declares ssh-rsa but the key data is of type ssh-ed25519"


def test_ecdsa_curve_mismatch() -> None:
    blob = ECDSA_KEY.split()[1]
    issue = only_issue({"ssh_authorized_keys": [f"ecdsa-sha2-nistp384 {blob}"]})
    assert issue.path == "$.ssh_authorized_keys[0]"
    assert "declares ecdsa-sha2-nistp384" in issue.message


def test_truncated_key_blob() -> None:
    raw = base64.b64decode(ED25519_KEY.split()[1])[:-8]
    issue = only_issue({"ssh_authorized_keys": [f"ssh-ed25519 {base64.b64encode(raw).decode()}"]})
    assert issue.path == "$.ssh_authorized_keys[0]"
    assert issue.message.startswith("is not a valid ssh-ed25519 key")


def test_bad_base64() -> None:
    issue = only_issue({"ssh_authorized_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5A"]})
    assert issue == ValidationIssue("$.ssh_authorized_keys[0]", "key data is not valid base64")


def test_weak_rsa_key(small_rsa_key: str) -> None:
    issue = only_issue({"ssh_authorized_keys": [small_rsa_key]})
    assert issue.path == "$.ssh_authorized_keys[0]"
    assert "1024 bits" in issue.message


def test_too_many_and_duplicate_keys() -> None:
    assert only_issue({"ssh_authorized_keys": [ED25519_KEY] * 2}).message == "has duplicate items"
    keys = [f"{ED25519_KEY}{i}" for i in range(17)]
    assert only_issue({"ssh_authorized_keys": keys}) == ValidationIssue(
        "$.ssh_authorized_keys", "has more than 16 items"
    )


def test_key_line_too_long() -> None:
    # Both the length and the pattern (comment too long) fail, at the same field.
    assert set(paths({"ssh_authorized_keys": [ED25519_KEY + " " + "x" * 9000]})) == {
        "$.ssh_authorized_keys[0]"
    }


# --- env ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["1BAD", "BAD-NAME", "A B", ""])
def test_bad_env_name(name: str) -> None:
    issue = only_issue({"env": {"GOOD": "1", name: "x"}})
    assert issue.path == f"$.env[{json.dumps(name)}]"
    assert "not a valid name" in issue.message


def test_env_limits_and_no_value_echo() -> None:
    many = {f"V{i}": "x" for i in range(65)}
    assert only_issue({"env": many}) == ValidationIssue("$.env", "has more than 64 entries")
    secret = "TOPSECRET" * 500
    issue = only_issue({"env": {"TOKEN": secret}})
    assert issue.path == "$.env.TOKEN"
    assert "TOPSECRET" not in issue.message
    assert only_issue({"env": {"N": 3}}) == ValidationIssue("$.env.N", "must be of type string")


# --- size, unknown fields, scalars ----------------------------------------------------------


def test_oversized_document() -> None:
    doc = {"files": [{"path": f"/etc/xwvm/f{i}", "content": "x" * 60000} for i in range(5)]}
    issue = only_issue(doc)
    assert issue.path == "$"
    assert f"more than {MAX_DOCUMENT_BYTES}" in issue.message


def test_unknown_fields() -> None:
    doc = {"colour": "blue", "files": [{"path": "/etc/xwvm/a", "content": "", "owner": "root"}]}
    assert validate_user_context(doc) == [
        ValidationIssue("$.colour", "unknown field"),
        ValidationIssue("$.files[0].owner", "unknown field"),
    ]


@pytest.mark.parametrize("network", ["lan", "", None, 1])
def test_bad_network(network: object) -> None:
    issue = only_issue({"network": network})
    assert issue == ValidationIssue("$.network", "must be one of: none, server, internet")


@pytest.mark.parametrize("hostname", ["-bad", "bad-", "under_score", "a" * 64, "", "dot.ted"])
def test_bad_hostname(hostname: str) -> None:
    assert set(paths({"hostname": hostname})) == {"$.hostname"}


@pytest.mark.parametrize("hostname", ["a", "Node-7", "x" * 63])
def test_good_hostname(hostname: str) -> None:
    assert validate_user_context({"hostname": hostname}) == []


# --- files ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/etc/passwd",
        "/home/xwvmx/a",
        "/home/xwvm",
        "/home/xwvm/",
        "/home/xwvm/../root/.ssh/authorized_keys",
        "/etc/xwvm/./x",
        "home/xwvm/a",
        "/home/xwvm/a b",
        "/root/x",
    ],
)
def test_bad_file_path(path: str) -> None:
    assert set(paths({"files": [{"path": path, "content": "x"}]})) == {"$.files[0].path"}


@pytest.mark.parametrize("path", ["/home/xwvm/.profile", "/etc/xwvm/conf.d/site-1.conf"])
def test_good_file_path(path: str) -> None:
    assert validate_user_context({"files": [{"path": path, "content": "x"}]}) == []


def test_file_content_limits() -> None:
    too_long = {"files": [{"path": "/etc/xwvm/a", "content": "x" * 65537}]}
    assert set(paths(too_long)) == {"$.files[0].content"}
    # 40000 characters but 80000 UTF-8 bytes: only the byte check catches it.
    wide = {"files": [{"path": "/etc/xwvm/a", "content": "é" * 40000}]}
    assert only_issue(wide) == ValidationIssue("$.files[0].content", "is larger than 65536 bytes")


@pytest.mark.parametrize("mode", ["4755", "0800", "rwx", "755x", 755])
def test_bad_file_mode(mode: object) -> None:
    assert paths({"files": [{"path": "/etc/xwvm/a", "content": "", "mode": mode}]}) == [
        "$.files[0].mode"
    ]


def test_file_required_fields_and_duplicates() -> None:
    doc = {
        "files": [
            {"path": "/etc/xwvm/a"},
            {"path": "/etc/xwvm/b", "content": ""},
            {"path": "/etc/xwvm/b", "content": ""},
        ]
    }
    assert validate_user_context(doc) == [
        ValidationIssue("$.files[0].content", "missing required field"),
        ValidationIssue("$.files[2].path", "is given twice"),
    ]


# --- all errors at once, and the exception --------------------------------------------------


def test_all_errors_reported_together() -> None:
    doc = {
        "ssh_authorized_keys": ["ssh-rsa " + ED25519_KEY.split()[1]],
        "env": {"9LIVES": "x"},
        "network": "lan",
        "hostname": "no_underscores",
        "files": [{"path": "/etc/shadow", "content": "x"}],
        "extra": 1,
    }
    assert paths(doc) == [
        '$.env["9LIVES"]',
        "$.extra",
        "$.files[0].path",
        "$.hostname",
        "$.network",
        "$.ssh_authorized_keys[0]",
    ]


def test_parse_user_context_raises_context_error() -> None:
    with pytest.raises(ContextError) as err:
        parse_user_context({"network": "lan", "env": {"1X": "y"}})
    assert err.value.http_status == 400
    assert [i.path for i in err.value.issues] == ['$.env["1X"]', "$.network"]
    assert "$.network: must be one of" in str(err.value)


def test_parse_user_context_defaults() -> None:
    user = parse_user_context({})
    assert user.network.value == "server"
    assert user.hostname is None and user.files == () and dict(user.env) == {}
    parsed = parse_user_context(user_doc())
    assert parsed.files[1].mode == "0644"
    assert parsed.ssh_authorized_keys == (ED25519_KEY, ECDSA_KEY)


def test_json_path_formatting() -> None:
    assert json_path([]) == "$"
    assert json_path(["files", 0, "path"]) == "$.files[0].path"
    assert json_path(["env", "A-B"]) == '$.env["A-B"]'
