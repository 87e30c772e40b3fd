"""Template specs: the shipped ones are valid; every kind of mistake is reported with its path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.processes import run_cli
from xwvm.client.imagebuild.spec import (
    SpecError,
    load_spec,
    merge,
    validate_document,
    validate_spec_file,
)
from xwvm.protocol import hardening

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


def base_doc() -> dict[str, Any]:
    return yaml.safe_load((TEMPLATES / "base.yaml").read_text())


def issues_of(doc: Any) -> dict[str, str]:
    return {i.path: i.message for i in validate_document(doc)}


@pytest.mark.parametrize("name", ["base", "root"])
def test_shipped_specs_are_valid(name: str) -> None:
    assert validate_spec_file(TEMPLATES / f"{name}.yaml") == []


def test_unknown_fields_are_named_at_every_level() -> None:
    doc = base_doc()
    doc["colour"] = "blue"
    doc["disk"]["raid"] = 5
    assert issues_of(doc) == {"$.colour": "unknown field", "$.disk.raid": "unknown field"}


def test_missing_required_fields() -> None:
    doc = base_doc()
    del doc["kernel"]
    del doc["os"]["release"]
    assert issues_of(doc) == {"$.kernel": "missing required field",
                              "$.os.release": "missing required field"}


def test_bad_types_and_values() -> None:
    doc = base_doc()
    doc["disk"]["size_mb"] = "2G"
    doc["min_memory_mb"] = 16
    doc["disk"]["formats"] = ["qcow2", "iso"]
    doc["os"]["release"] = "trixie"
    doc["shared_apps"] = "root"
    issues = issues_of(doc)
    assert issues["$.disk.size_mb"] == "must be an integer"
    assert issues["$.min_memory_mb"] == "must be at least 64"
    assert issues["$.disk.formats[1]"] == "must be one of: qcow2, vdi, vmdk"
    assert issues["$.os.release"] == "must be one of: bookworm"
    assert issues["$.shared_apps"] == "must be a list"


def test_bad_package_names() -> None:
    doc = base_doc()
    doc["packages"] = ["python3", "Python3", "curl; rm -rf /", "ok-pkg=1.2-3"]
    doc["pip"] = {"target": "/opt/xwvm/pylib", "packages": ["uproot", "root>=6 && evil"]}
    issues = issues_of(doc)
    assert set(issues) == {"$.packages[1]", "$.packages[2]", "$.pip.packages[1]"}
    assert issues["$.packages[1]"].startswith("is not a Debian package name")
    assert issues["$.pip.packages[1]"].startswith("is not a pip requirement")


def test_sudo_is_refused_and_hardening_cannot_be_turned_off() -> None:
    doc = base_doc()
    doc["packages"].append("sudo")
    doc["hardening"]["ssh_password_auth"] = True
    doc["hardening"]["user"] = "root"
    issues = issues_of(doc)
    assert "no sudo" in issues[f"$.packages[{len(doc['packages']) - 1}]"]
    assert "cannot be turned off" in issues["$.hardening.ssh_password_auth"]
    assert issues["$.hardening.user"] == "must not be a system account"


def test_every_privilege_package_of_the_guest_list_is_refused() -> None:
    doc = base_doc()
    first = len(doc["packages"])
    doc["packages"].extend(hardening.FORBIDDEN_PACKAGES)
    issues = issues_of(doc)
    assert all("no sudo" in issues[f"$.packages[{first + i}]"]
               for i in range(len(hardening.FORBIDDEN_PACKAGES)))


def test_paths_and_cmdline() -> None:
    doc = base_doc()
    doc["files"] = [{"source": "../etc", "dest": "/"}, {"source": "no/such/dir", "dest": "x"}]
    doc["kernel"]["cmdline"] = "root=/dev/vda console=ttyS0"
    issues = issues_of(doc)
    assert issues["$.files[0].source"].startswith("is not a relative path")
    assert issues["$.files[1].source"].startswith("does not exist")
    assert issues["$.files[1].dest"].startswith("is not an absolute path")
    assert issues["$.kernel.cmdline"].startswith("must contain")


def test_extends_merges_mappings_and_lists() -> None:
    spec = load_spec(TEMPLATES / "root.yaml")
    base = load_spec(TEMPLATES / "base.yaml")
    assert spec.name == "root" and spec.document["extends"] == "base"
    assert spec.packages[: len(base.packages)] == base.packages  # parent's first
    assert "g++" in spec.packages
    assert spec.size_mb == 4096 and spec.formats == base.formats  # disk merged key by key
    assert spec.cmdline == base.cmdline and spec.user == base.user
    assert [c.name for c in spec.checks] == ["python-libs", "import-root", "root-command",
                                             "import-uproot"]
    assert spec.shared_apps == ("root",) and spec.min_memory_mb == 1024
    assert spec.pip_packages[0].startswith("root") and spec.sha256 != base.sha256


def test_merge_rules() -> None:
    assert merge({"a": [1, 2], "b": {"c": 1, "d": 2}, "e": 1},
                 {"a": [2, 3], "b": {"d": 5}, "e": 7}) == {"a": [1, 2, 3],
                                                           "b": {"c": 1, "d": 5}, "e": 7}


def test_extends_problems(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("name: a\nversion: '1'\nextends: b\n")
    (tmp_path / "b.yaml").write_text("name: b\nversion: '1'\nextends: a\n")
    (tmp_path / "c.yaml").write_text("name: c\nversion: '1'\nextends: missing\n")
    assert "cycle" in validate_spec_file(tmp_path / "a.yaml")[0].message
    assert validate_spec_file(tmp_path / "c.yaml")[0].path == "$.extends"


def test_child_needs_only_its_changes_and_errors_keep_paths(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text((TEMPLATES / "base.yaml").read_text())
    (tmp_path / "child.yaml").write_text("name: child\nversion: '2.0'\nextends: base\n"
                                         "disk: {size_mb: 100, colour: red}\n")
    with pytest.raises(SpecError) as err:
        load_spec(tmp_path / "child.yaml")
    assert {(i.path, i.message) for i in err.value.issues} == {
        ("$.disk.size_mb", "must be at least 256"), ("$.disk.colour", "unknown field")}


def test_not_yaml_or_not_a_mapping(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_text("name: [unclosed\n")
    (tmp_path / "y.yaml").write_text("- a list\n")
    assert validate_spec_file(tmp_path / "x.yaml")[0].message.startswith("is not valid YAML")
    assert validate_spec_file(tmp_path / "y.yaml")[0].message == "must be a mapping of fields"


def test_cli_validate(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    doc = base_doc()
    doc["disk"]["size_mb"] = "big"
    doc["extra"] = 1
    bad.write_text(yaml.safe_dump(doc))
    ok = run_cli(["template", "validate", str(TEMPLATES / "base.yaml"),
                  str(TEMPLATES / "root.yaml")], tmp_path)
    assert ok.returncode == 0 and ok.stdout.count(": ok") == 2
    out = run_cli(["template", "validate", str(bad)], tmp_path, check=False)
    assert out.returncode == 1
    assert "$.disk.size_mb: must be an integer" in out.stderr
    assert "$.extra: unknown field" in out.stderr
