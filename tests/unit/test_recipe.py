"""Recipes: the shipped ones load, and bad ones fail before anything runs, naming the key (with
what was meant), the step, the version or the device profile."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgekit.errors import ConfigError
from edgekit.recipe import RECIPE_VERSION, load_recipe, resolve_path

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ("lenet5-fashion-mnist", "cnn-gru-fashion-mnist", "resnet18-cpu-int8",
           "jetson-orin-nano-int8")

GOOD = {
    "recipe_version": 1,
    "name": "t",
    "model": {"zoo": "lenet5"},
    "data": {"eval": "fashion-mnist:test", "calib": "calibration/fashion-mnist-512.npz"},
    "steps": [{"quantize": {"calib_size": 64}}],
    "exports": [{"target": "openvino", "precision": "int8"}],
    "devices": ["local-cpu", {"profile": "local-cpu", "threads": 1, "latency": {"min_queries": 5}}],
    "budget": {"max_drop": 1.0},
}


def _write(tmp_path, data) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _with(**changes):
    data = {**GOOD}
    data.update(changes)
    return data


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_recipes_load(name):
    recipe = load_recipe(ROOT / "recipes" / f"{name}.yaml")
    assert recipe.name == name and recipe.recipe_version == RECIPE_VERSION
    assert recipe.data.eval and recipe.budget.max_drop is not None and recipe.devices


def test_cnn_gru_recipe_prunes_substitutes_and_quantizes_for_ort_and_openvino():
    recipe = load_recipe(ROOT / "recipes" / "cnn-gru-fashion-mnist.yaml")
    assert [n for n, _ in recipe.step_list()][:2] == ["prune", "dwsep"]
    assert "quantize" in [n for n, _ in recipe.step_list()]
    assert {(e.target, e.precision) for e in recipe.exports} >= {("openvino", "int8")}


def test_good_recipe_loads_with_device_overrides(tmp_path):
    from edgekit.recipe import device_profile

    recipe = load_recipe(_write(tmp_path, GOOD))
    assert recipe.step_list() == [("quantize", {"calib_size": 64})]
    device = device_profile(recipe.devices[1])
    assert device.threads == 1 and device.latency.min_queries == 5
    assert device.latency.min_seconds == 1.0  # the rest of the profile's protocol is kept


@pytest.mark.parametrize("data, message, hint", [
    (_with(stpes=[]), "unknown key 'stpes'", "did you mean 'steps'?"),
    (_with(model={"zoo": "lenet5", "trian": {}}), "unknown key 'model.trian'",
     "did you mean 'train'?"),
    (_with(data={"eval": "fashion-mnist:test", "calibb": "x"}), "unknown key 'data.calibb'",
     "did you mean 'calib'?"),
    (_with(budget={"max_dorp": 1}), "unknown key 'budget.max_dorp'", "did you mean 'max_drop'?"),
    (_with(exports=[{"target": "openvino", "precison": "int8"}]),
     "unknown key 'exports.0.precison'", "did you mean 'precision'?"),
    (_with(steps=[{"prune": {"ratoi": 0.3}}]), "steps[0].prune: unknown key 'ratoi'",
     "did you mean 'ratio'?"),
    (_with(steps=[{"quantise": {}}]), "unknown step 'quantise'", "did you mean 'quantize'?"),
    (_with(devices=[{"profile": "local-cpu", "thread": 1}]), "unknown key 'thread'",
     "did you mean 'threads'?"),
])
def test_typos_name_the_key_and_what_was_meant(tmp_path, data, message, hint):
    with pytest.raises(ConfigError) as exc:
        load_recipe(_write(tmp_path, data))
    assert message in exc.value.message
    assert exc.value.hint == hint


def test_bad_values_fail_before_running(tmp_path):
    cases = [
        (_with(model={"zoo": "lenet6"}), "did you mean 'lenet5'"),
        (_with(model={"zoo": "lenet5", "path": "x.pt"}), "not both"),
        (_with(model={}), "name a model"),
        (_with(steps=[{"prune": {"ratio": 1.5}}]), "steps[0].prune: ratio"),
        (_with(steps=[{"quantize": {}}, {"prune": {"ratio": 0.3}}]), "prune comes after quantize"),
        (_with(steps=[{"dwsep": {}}, {"prune": {"ratio": 0.3}}]), "prune comes after dwsep"),
        (_with(steps=[{"prune": {}, "dwsep": {}}]), "must name one step"),
        (_with(devices=["no-such-device"]), "no device profile"),
        (_with(exports=[{"target": "coreml"}]), "exports.0.target"),
        (_with(name="has spaces"), "name"),
    ]
    for data, message in cases:
        with pytest.raises(ConfigError) as exc:
            load_recipe(_write(tmp_path, data))
        assert message in exc.value.message, (data, exc.value.message)


def test_recipe_version_is_required_and_not_newer(tmp_path):
    data = {k: v for k, v in GOOD.items() if k != "recipe_version"}
    with pytest.raises(ConfigError, match="no recipe_version"):
        load_recipe(_write(tmp_path, data))
    with pytest.raises(ConfigError, match="version 2 recipe") as exc:
        load_recipe(_write(tmp_path, _with(recipe_version=RECIPE_VERSION + 1)))
    assert exc.value.hint == "upgrade edgekit"


def test_paths_resolve_from_cwd_then_the_recipe_folder(tmp_path, monkeypatch):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "calib.npz").write_bytes(b"x")
    recipe = tmp_path / "recipes" / "r.yaml"
    monkeypatch.chdir(ROOT)
    assert resolve_path("calib.npz", recipe) == str(tmp_path / "recipes" / "calib.npz")
    assert resolve_path("calibration/fashion-mnist-512.npz", recipe) == \
        "calibration/fashion-mnist-512.npz"
    assert resolve_path("fashion-mnist:test", recipe) == "fashion-mnist:test"


def test_run_refuses_a_bad_recipe_with_exit_2_and_writes_nothing(tmp_path, capsys):
    from edgekit.cli import main

    path = _write(tmp_path, _with(stpes=[]))
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(["run", str(path), "-o", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unknown key 'stpes'" in err and "did you mean 'steps'?" in err
    assert not out.exists()


def test_run_refuses_a_store_that_is_not_ours_before_any_work(tmp_path, capsys):
    from edgekit.cli import main

    store = tmp_path / "results.db"
    store.write_text("not a database\n")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(["run", str(_write(tmp_path, GOOD)), "-o", str(out), "--store", str(store)])
    assert exc.value.code == 2
    assert "not an edgekit results store" in capsys.readouterr().err
    assert store.read_text() == "not a database\n" and not out.exists()


def test_run_times_the_training_of_its_model_in_the_model_stage(tmp_path, monkeypatch):
    """A model trained on first use costs the model stage its training time (it was once logged
    as 'model 0 s': the checkpoint was obtained before the stage's clock started)."""
    import torch

    from edgekit.recipe_run import run_recipe

    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path / "cache"))  # nothing trained yet
    recipe = _write(tmp_path, {
        "recipe_version": 1, "name": "timed",
        "model": {"arch": "edgekit.zoo:lenet5",
                  "train": {"epochs": 1, "limit": 1200, "batch_size": 32}},
        "input": {"shape": [1, 1, 28, 28]},
        "data": {"train": "fashion-mnist:train", "eval": "fashion-mnist:test", "eval_limit": 50},
        "devices": [{"profile": "local-cpu", "threads": 1, "batch_sizes": [1],
                     "latency": {"warmup_count": 1, "warmup_seconds": 0.0, "min_queries": 5,
                                 "min_seconds": 0.0, "max_seconds": 1.0}}],
        "budget": {"max_drop": 100.0}})
    result = run_recipe(recipe, tmp_path / "out")
    seconds = {s["stage"]: s["seconds"] for s in result["stages"]}
    (checkpoint,) = (tmp_path / "cache" / "models").glob("lenet5-*.pt")
    meta = torch.load(checkpoint, map_location="cpu", weights_only=True)["meta"]
    trained_s = meta["history"]["seconds"]
    # The stage holds the training (its seconds are rounded to 0.01); the old code logged only
    # the stage's own bookkeeping, a few milliseconds, whatever the training took.
    assert trained_s > 0 and seconds["model"] + 0.005 >= trained_s
    assert seconds["report"] > 0  # the report stage is timed too, not logged as 0.0


# ---------------------------------------------------------------- issue 25, item 2
def _code_recipe(tmp_path, model: dict) -> Path:
    return _write(tmp_path, {
        "recipe_version": 1, "name": "copied", "model": model,
        "input": {"shape": [1, 1, 28, 28], "mean": [0.5], "std": [0.5]},
        "data": {"train": "fashion-mnist:train", "eval": "fashion-mnist:test"}})


@pytest.mark.parametrize("arch, kwargs", [
    ("os:system", {"command": "touch {marker}"}),
    ("torchvision.models._api:load_state_dict_from_url",
     {"url": "file://{marker}", "model_dir": "{marker}.d"}),
    ("torchvision.models:get_model", {"name": "resnet18"}),
])
def test_a_recipe_arch_goes_through_the_checkpoint_allowlist(tmp_path, arch, kwargs):
    """A copied recipe cannot make edgekit call any importable callable: its arch is refused
    before anything runs (nothing touched, nothing fetched), naming --trust-recipe; the trusted
    load accepts it (the user's choice on the command line) without building it."""
    from edgekit.errors import UnsafeModelError

    marker = tmp_path / "pwned"
    kwargs = {k: v.format(marker=marker) for k, v in kwargs.items()}
    path = _code_recipe(tmp_path, {"arch": arch, "arch_kwargs": kwargs, "train": {"epochs": 1}})
    with pytest.raises(UnsafeModelError, match="not a model factory") as info:
        load_recipe(path)
    assert "model.arch" in info.value.message and "--trust-recipe" in info.value.hint
    trusted = load_recipe(path, trust=True)
    assert trusted.trusted and trusted.model.arch == arch
    assert not marker.exists() and not Path(f"{marker}.d").exists()


def test_a_recipe_arch_on_the_list_may_not_choose_weights(tmp_path):
    from edgekit.errors import UnsafeModelError

    path = _code_recipe(tmp_path, {"arch": "torchvision.models:resnet18",
                                   "arch_kwargs": {"weights": "IMAGENET1K_V1"}})
    with pytest.raises(UnsafeModelError, match="may not choose weights"):
        load_recipe(path)
    ok = load_recipe(_code_recipe(tmp_path, {"arch": "torchvision.models:resnet18",
                                             "arch_kwargs": {"num_classes": 10}}))
    assert not ok.trusted and ok.model.arch_kwargs == {"num_classes": 10}


def test_a_recipe_cannot_trust_its_own_model_file(tmp_path):
    """`trust_model: true` in a recipe would unpickle its model file: refused unless the user
    passes --trust-recipe; the pickle is never opened."""
    import pickle

    from edgekit.errors import UnsafeModelError

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    (tmp_path / "raw.pickle").write_bytes(pickle.dumps(Payload()))
    path = _write(tmp_path, _with(model={"path": "raw.pickle", "trust_model": True}))
    with pytest.raises(UnsafeModelError, match="cannot trust its own model file") as info:
        load_recipe(path)
    assert "--trust-recipe" in info.value.hint and not marker.exists()
    assert load_recipe(path, trust=True).model.trust_model


def test_an_untrusted_recipe_arch_is_built_as_a_checkpoint_arch(tmp_path):
    """Below the recipe check, the model stage builds an untrusted recipe's arch as a file's
    (load_model(trusted_arch=False)): an unlisted factory is refused, not imported, and a
    listed one loads its state_dict."""
    import torch

    from edgekit.errors import UnsafeModelError
    from edgekit.io.models import build_arch, load_model
    from edgekit.recipe_run import load_bundle

    torch.save(build_arch("edgekit.zoo:lenet5", {}).state_dict(), tmp_path / "sd.pt")
    with pytest.raises(UnsafeModelError, match="not a model factory"):
        load_model(tmp_path / "sd.pt", arch="os:system", arch_kwargs={"command": "true"},
                   input_shape=(1, 1, 28, 28), trusted_arch=False)
    recipe = load_recipe(_code_recipe(tmp_path, {"path": "sd.pt", "arch": "edgekit.zoo:lenet5"}))
    bundle = load_bundle(recipe, tmp_path / "sd.pt")
    assert not recipe.trusted and bundle.arch == "edgekit.zoo:lenet5"
    assert bundle.spec.shape == (1, 1, 28, 28) and bundle.spec.mean == (0.5,)


# ---------------------------------------------------------------- issue 25, item 6
def test_yaml_bound_counts_expanded_characters_not_only_nodes(tmp_path):
    """One long string aliased many times passes any node count; its expanded text is bounded
    too, and the error holds none of it."""
    from edgekit.config import MAX_YAML_CHARS, MAX_YAML_NODES, read_yaml

    big = "x" * 100_000
    aliases = 200  # 20 MB expanded, 201 nodes: under the node limit
    assert aliases < MAX_YAML_NODES and aliases * len(big) > MAX_YAML_CHARS
    path = tmp_path / "bomb.yaml"
    path.write_text(f"a: &s {big}\nb: [" + ", ".join(["*s"] * aliases) + "]\n")
    with pytest.raises(ConfigError, match="characters of text") as info:
        read_yaml(path)
    assert len(str(info.value)) < 500
    with pytest.raises(ConfigError, match="characters of text"):
        load_recipe(path)
    # the same string a few times is fine
    path.write_text(f"a: &s {big}\nb: [*s, *s]\n")
    assert len(read_yaml(path)["b"]) == 2


def test_yaml_file_over_the_bound_is_refused_before_it_is_read(tmp_path):
    from edgekit.config import MAX_YAML_CHARS, read_yaml

    path = tmp_path / "huge.yaml"
    path.write_text("# " + "x" * MAX_YAML_CHARS + "\na: 1\n")
    with pytest.raises(ConfigError, match="over the"):
        read_yaml(path)
