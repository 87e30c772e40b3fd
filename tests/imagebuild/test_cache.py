"""The image cache's key: exactly what goes into the image, so server code is not in it."""

from __future__ import annotations

import shutil
from pathlib import Path

from xwvm.client.imagebuild import sources
from xwvm.client.imagebuild.cache import image_inputs, input_key
from xwvm.client.imagebuild.spec import load_spec

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


def _tree_copy(tmp: Path) -> sources.Locate:
    """The importable trees copied under ``tmp``, with a server module beside the guest's
    packages, and a locator that finds packages there instead."""
    for package in ("appliance", "contextualizer", "xwvm/protocol"):
        shutil.copytree(sources.package_dir(package), tmp / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(sources.package_dir("xwvm") / "__init__.py", tmp / "xwvm" / "__init__.py")
    (tmp / "xwvm" / "server").mkdir()
    (tmp / "xwvm" / "server" / "app.py").write_text("create_app = None\n")
    return lambda package: tmp / package


def test_the_image_carries_the_guest_package_only() -> None:
    spec = load_spec(TEMPLATES / "base.yaml")
    names = [name for _, name in sources.guest_files(spec.python_packages)]
    assert "xwvm/__init__.py" in names and "xwvm/protocol/__init__.py" in names
    assert "appliance/agent.py" in names and "contextualizer/model.py" in names
    assert not [n for n in names if n.startswith("xwvm/") and not
                (n == "xwvm/__init__.py" or n.startswith("xwvm/protocol/"))]
    assert not [n for n in names if n.startswith(("appliance/rootfs/", "appliance/init"))]
    # The contextualizer's reader only: its builders need libraries the image lacks.
    assert [n for n in names if n.startswith("contextualizer/")] == [
        "contextualizer/__init__.py", "contextualizer/errors.py", "contextualizer/model.py"]


def test_server_code_does_not_change_the_key(tmp_path: Path) -> None:
    spec = load_spec(TEMPLATES / "base.yaml")
    locate = _tree_copy(tmp_path)
    key = input_key(spec, locate)
    (tmp_path / "xwvm" / "server" / "app.py").write_text("create_app = print\n")
    assert input_key(spec, locate) == key
    assert all("xwvm/server" not in str(path) for path, _ in image_inputs(spec, locate))


def test_the_contextualizers_builders_do_not_change_the_key(tmp_path: Path) -> None:
    spec = load_spec(TEMPLATES / "base.yaml")
    locate = _tree_copy(tmp_path)
    key = input_key(spec, locate)
    seed = tmp_path / "contextualizer" / "seed.py"
    seed.write_text(seed.read_text() + "\n# changed\n")
    assert input_key(spec, locate) == key
    model = tmp_path / "contextualizer" / "model.py"
    model.write_text(model.read_text() + "\n# changed\n")
    assert input_key(spec, locate) != key


def test_guest_code_changes_the_key(tmp_path: Path) -> None:
    spec = load_spec(TEMPLATES / "base.yaml")
    locate = _tree_copy(tmp_path)
    key = input_key(spec, locate)
    vocab = tmp_path / "xwvm" / "protocol" / "vocab.py"
    vocab.write_text(vocab.read_text() + "\n# changed\n")
    changed = input_key(spec, locate)
    assert changed != key
    (tmp_path / "appliance" / "agent.py").write_text("")
    assert input_key(spec, locate) not in (key, changed)
