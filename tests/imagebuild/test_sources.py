"""What an image takes from the build host: the guest packages' own files and nothing else.
A symbolic link in a guest package, a package found in several folders, or a spec's
``files`` source outside the appliance's folder refuses the build (no image is built here)."""

from __future__ import annotations

import importlib
import shutil
import uuid
from pathlib import Path

import pytest
import yaml

from xwvm.client.imagebuild import sources
from xwvm.client.imagebuild.cache import input_key
from xwvm.client.imagebuild.spec import load_spec, validate_document

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
ENTRIES = ("appliance", "contextualizer/model.py", "xwvm/protocol")


def _tree(tmp: Path) -> sources.Locate:
    """The guest's packages copied under ``tmp/src``, with a locator that finds them there."""
    src = tmp / "src"
    for package in ("appliance", "contextualizer", "xwvm/protocol"):
        shutil.copytree(sources.package_dir(package), src / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(sources.package_dir("xwvm") / "__init__.py", src / "xwvm" / "__init__.py")
    (tmp / "secret.txt").write_text("the build host's secret\n")
    return lambda package: src / package


def test_the_copied_tree_has_no_links_and_is_taken(tmp_path: Path) -> None:
    locate = _tree(tmp_path)
    names = [name for _, name in sources.guest_files(ENTRIES, locate)]
    assert "appliance/agent.py" in names and "contextualizer/model.py" in names


@pytest.mark.parametrize("link,target", [
    ("appliance/notes.txt", "secret.txt"),                   # to a host file
    ("xwvm/protocol/sub/deep.py", "secret.txt"),             # deeper down
    ("appliance/also_agent.py", "src/appliance/agent.py"),   # even to a file of its own
    ("appliance/hostdir", "."),                              # to a folder
    ("appliance/dangling.py", "no-such-file"),               # to nothing
    ("contextualizer/model.py", "secret.txt"),               # a single-module entry
    ("xwvm/__init__.py", "secret.txt"),                      # a parent's __init__.py
])
def test_a_link_in_a_guest_package_refuses_the_build(tmp_path: Path, link: str,
                                                     target: str) -> None:
    locate = _tree(tmp_path)
    path = tmp_path / "src" / link
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    path.symlink_to(tmp_path / target)
    with pytest.raises(sources.SourceError, match="symbolic link"):
        sources.guest_files(ENTRIES, locate)
    with pytest.raises(sources.SourceError, match="symbolic link"):
        input_key(load_spec(TEMPLATES / "base.yaml"), locate)


def test_a_link_in_a_skipped_folder_is_not_looked_at(tmp_path: Path) -> None:
    locate = _tree(tmp_path)
    cache = tmp_path / "src" / "appliance" / "__pycache__"
    cache.mkdir()
    (cache / "x.pyc").symlink_to(tmp_path / "secret.txt")
    assert sources.guest_files(ENTRIES, locate)


def test_a_namespace_package_in_two_folders_is_refused(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"xwvm_ns_{uuid.uuid4().hex[:8]}"
    for place in ("one", "two"):
        (tmp_path / place / name).mkdir(parents=True)
        (tmp_path / place / name / "mod.py").write_text("")
        monkeypatch.syspath_prepend(str(tmp_path / place))
    importlib.invalidate_caches()
    with pytest.raises(sources.SourceError, match="namespace package in 2 folders"):
        sources.package_dir(name)
    (tmp_path / "two" / name / "mod.py").unlink()
    (tmp_path / "two" / name).rmdir()
    importlib.invalidate_caches()
    assert sources.package_dir(name) == tmp_path / "one" / name


def test_a_files_source_must_lie_inside_the_appliance(tmp_path: Path) -> None:
    locate = _tree(tmp_path)
    assert sources.files_source("appliance/rootfs", locate) == \
        tmp_path / "src" / "appliance" / "rootfs"
    with pytest.raises(sources.SourceError, match="not inside the appliance"):
        sources.files_source("xwvm/protocol", locate)  # another package's files
    (tmp_path / "src" / "appliance" / "rootfs" / "escape").symlink_to(tmp_path)
    with pytest.raises(sources.SourceError, match="not inside the appliance"):
        sources.files_source("appliance/rootfs/escape", locate)
    with pytest.raises(sources.SourceError, match="does not exist"):
        sources.files_source("appliance/nothing", locate)


def test_a_spec_naming_another_packages_files_is_invalid() -> None:
    doc = yaml.safe_load((TEMPLATES / "base.yaml").read_text())
    doc["files"] = [{"source": "appliance/rootfs", "dest": "/"},
                    {"source": "xwvm/server", "dest": "/opt"},
                    {"source": "contextualizer", "dest": "/opt"}]
    issues = {i.path: i.message for i in validate_document(doc)}
    assert "$.files[0].source" not in issues
    assert issues["$.files[1].source"].startswith("is not inside the appliance package")
    assert issues["$.files[2].source"].startswith("is not inside the appliance package")
