"""Shipped package data (issue 16 part 5): found through importlib.resources, whatever the working
directory; a shipped recipe copied elsewhere still finds its calibration set; a user's relative
paths resolve from the recipe's own folder; the zoo's shipped checkpoints are checked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgekit import resources
from edgekit.errors import InputError
from edgekit.recipe import load_recipe, resolve_path
from tests.conftest import ROOT


def test_shipped_folders_are_in_the_package_and_the_repo_links_to_them():
    pkg = Path(resources.__file__).parent / "_data"
    for kind in ("devices", "calibration", "recipes"):
        assert resources.shipped_dir(kind) == pkg / kind
        assert (ROOT / kind).resolve() == (pkg / kind).resolve()
    assert (Path(resources.__file__).parent / "py.typed").is_file()
    with pytest.raises(ValueError, match="unknown shipped resource kind"):
        resources.shipped_dir("weights")


def test_shipped_file_by_name_or_package_prefix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    npz = resources.shipped_dir("calibration") / "fashion-mnist-512.npz"
    assert resources.shipped_file("calibration/fashion-mnist-512.npz") == npz
    assert resources.shipped_file("package:calibration/fashion-mnist-512.npz") == npz
    for bad in ("calibration/missing.npz", "../pyproject.toml", "calibration/../../errors.py",
                "elsewhere/x.npz", ""):
        assert resources.shipped_file(bad) is None, bad


def test_a_copied_recipe_runs_from_anywhere(tmp_path, monkeypatch):
    """The shipped lenet5 recipe copied into another folder, run from a third one: its
    calibration set comes from the package; a file beside the copy wins over it."""
    copy = tmp_path / "mine" / "lenet5.yaml"
    copy.parent.mkdir()
    shutil.copy(resources.shipped_dir("recipes") / "lenet5-fashion-mnist.yaml", copy)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    recipe = load_recipe(copy)
    shipped = resources.shipped_dir("calibration") / "fashion-mnist-512.npz"
    assert resolve_path(recipe.data.calib, copy) == str(shipped)
    (copy.parent / "calibration").mkdir()
    own = copy.parent / "calibration" / "fashion-mnist-512.npz"
    own.write_bytes(shipped.read_bytes())
    assert resolve_path(recipe.data.calib, copy) == str(own)
    # the recipe's folder comes before the working directory
    (tmp_path / "cwd" / "calibration").mkdir()
    (tmp_path / "cwd" / "calibration" / "fashion-mnist-512.npz").write_bytes(b"x")
    assert resolve_path(recipe.data.calib, copy) == str(own)
    assert resolve_path("fashion-mnist:test", copy) == "fashion-mnist:test"
    assert resolve_path("missing.npz", copy) == "missing.npz"  # reported missing by the caller


def test_zoo_checkpoint_ships_with_its_record_and_recipes_use_it(tmp_path, monkeypatch):
    from edgekit import events
    from edgekit.io.files import sha256_file
    from edgekit.recipe_run import model_checkpoint
    from edgekit.zoo import shipped_checkpoint, shipped_record

    path = shipped_checkpoint("lenet5")
    record = shipped_record("lenet5")
    assert path is not None and record is not None
    assert sha256_file(path) == record["sha256"] and record["bytes"] == path.stat().st_size
    assert record["train_config"]["epochs"] == 3 and record["test_top1"] >= 0.88
    assert path.stat().st_size < 1_000_000

    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path / "cache"))
    recipe = load_recipe(resources.shipped_dir("recipes") / "lenet5-fashion-mnist.yaml")
    with events.capture() as lines:
        assert model_checkpoint(recipe, Path("r.yaml"), None) == path
    assert lines == [f"[edgekit run] model: the trained lenet5 shipped with edgekit ({path})"]
    assert not (tmp_path / "cache").exists()


def test_a_tampered_shipped_checkpoint_is_refused(tmp_path, monkeypatch):
    from edgekit import zoo

    fake = tmp_path / "zoo"
    fake.mkdir()
    (fake / "lenet5.pt").write_bytes(b"not the trained model")
    (fake / "lenet5.json").write_text(json.dumps({"sha256": "0" * 64}))
    monkeypatch.setattr(resources, "shipped_dir", lambda kind: fake)
    with pytest.raises(InputError, match="does not match its recorded sha256"):
        zoo.shipped_checkpoint("lenet5")
    assert zoo.shipped_checkpoint("rowrnn") is None  # none ships in this folder
