"""lenet5_wide, the demo's win: the shipped checkpoint loads, matches its record and scores its
recorded top-1; `edgekit demo` searches it over the default optimize space."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from edgekit.zoo import ZOO, build, shipped_checkpoint, shipped_record  # noqa: E402
from tests.conftest import requires_data  # noqa: E402


def test_lenet5_wide_is_lenet5_with_96_192_channels_and_fc1_128():
    model = build("lenet5_wide").model
    assert tuple(model.conv1.weight.shape) == (96, 1, 5, 5)
    assert tuple(model.conv2.weight.shape) == (192, 96, 5, 5)
    assert (model.fc1.in_features, model.fc1.out_features) == (3072, 128)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_shipped_lenet5_wide_matches_its_record_and_is_a_few_mb():
    from edgekit.io.files import sha256_file
    from edgekit.io.models import load_model

    path = shipped_checkpoint("lenet5_wide")  # refuses a file whose sha256 differs
    assert path is not None and path.name == "lenet5_wide.pt"
    record = shipped_record("lenet5_wide")
    assert sha256_file(path) == record["sha256"] and path.stat().st_size == record["bytes"]
    assert record["bytes"] < 4_000_000
    assert record["command"].startswith("edgekit zoo train lenet5_wide")
    # trained with the registry's recipe, so `edgekit zoo train lenet5_wide` reproduces it
    entry = ZOO["lenet5_wide"]
    assert record["train_config"]["epochs"] == entry.epochs
    assert all(record["train_config"][k] == v for k, v in entry.train.items())
    assert record["test_images"] == 10000 and record["test_top1"] >= entry.target_top1
    bundle = load_model(path)  # weights_only, through the allowlist
    assert bundle.arch == "edgekit.zoo:lenet5_wide"
    assert bundle.meta["test_top1"] == record["test_top1"]
    assert sum(p.numel() for p in bundle.model.parameters()) == record["parameters"]


@requires_data
def test_shipped_lenet5_wide_scores_its_recorded_top1_on_a_test_subset():
    from edgekit.data import load_dataset
    from edgekit.io.models import load_model
    from edgekit.metrics import torch_top1
    from edgekit.zoo import default_spec

    record = shipped_record("lenet5_wide")
    bundle = load_model(shipped_checkpoint("lenet5_wide"))
    subset = load_dataset("fashion-mnist:test", default_spec("lenet5_wide"), limit=2000, seed=0)
    top1 = torch_top1(bundle.model.eval(), subset)
    # 2,000 stratified images: 3 binomial standard deviations of a ~0.85 top-1 is 2.4 points
    assert abs(top1 - record["test_top1"]) <= 0.024, (top1, record["test_top1"])


def test_demo_searches_lenet5_wide_over_the_default_space_in_a_few_minutes():
    from edgekit.cli.demo import DEMO_RECIPES, recipe_dir
    from edgekit.optimize.space import OptimizeSettings, parse_duration
    from edgekit.recipe import load_recipe

    assert "lenet5-wide-fashion-mnist.yaml" in DEMO_RECIPES
    recipe = load_recipe(recipe_dir() / "lenet5-wide-fashion-mnist.yaml")
    assert recipe.model.zoo == "lenet5_wide" and recipe.budget.max_drop == 1.0
    settings = recipe.optimize.model_dump()
    defaults = OptimizeSettings().model_dump()
    # the default space, nothing narrowed: only the wall time is the demo's
    assert {k: v for k, v in settings.items() if v != defaults[k]} == {"time_budget": "5m"}
    assert parse_duration(settings["time_budget"]) <= 300
