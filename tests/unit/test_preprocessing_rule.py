"""The one preprocessing rule (edgekit.preprocessing.resolve_preprocessing, issue 27): each field comes
from the file, from a preset the user names or from the user's flags, later ones overriding
earlier ones, with where it came from; nothing is guessed."""

from __future__ import annotations

import pytest

from edgekit.errors import InputError, ModelLoadError
from edgekit.preprocessing import PRESETS, describe_provenance, resolve_preprocessing
from edgekit.spec import InputSpec

RECORDED = InputSpec(shape=(1, 3, 32, 32), mean=(0.4, 0.4, 0.4), std=(0.2, 0.2, 0.2),
                     class_names=("a", "b"))


def test_the_file_alone() -> None:
    spec, prov = resolve_preprocessing(RECORDED, {}, what="m.pt")
    assert spec == RECORDED and set(prov.values()) == {"file"}
    assert describe_provenance(spec, prov) == (
        "preprocessing: shape 1,3,32,32; resize none (scaled to 32x32); mean 0.4,0.4,0.4; std "
        "0.2,0.2,0.2; channel order RGB (all from the file)")


def test_flags_override_the_file_field_by_field() -> None:
    spec, prov = resolve_preprocessing(RECORDED, {"mean": (0.5,), "channel_order": "bgr"},
                                       what="m.pt")
    assert spec.mean == (0.5,) and spec.std == (0.2, 0.2, 0.2) and spec.channel_order == "BGR"
    assert spec.class_names == ("a", "b")
    assert prov == {"shape": "file", "resize": "file", "mean": "--mean", "std": "file",
                    "channel_order": "--channel-order"}


def test_a_preset_over_nothing_and_flags_over_the_preset() -> None:
    spec, prov = resolve_preprocessing(None, {"preset": "cifar10", "std": (0.25,)}, what="m.pt")
    assert spec.shape == PRESETS["cifar10"].shape and spec.mean == PRESETS["cifar10"].mean
    assert spec.std == (0.25,)
    assert prov == {"shape": "preset cifar10", "resize": "preset cifar10",
                    "mean": "preset cifar10", "std": "--std", "channel_order": "preset cifar10"}


@pytest.mark.parametrize(("given", "lacks", "asks"), [
    ({}, "its input shape and how its inputs are normalised",
     "--input-shape 1,3,H,W --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225"),
    ({"input_shape": (1, 1, 28, 28)}, "does not know how its inputs are normalised",
     "--mean 0.5 --std 0.5"),
    ({"mean": (0.5,), "std": (0.2,)}, "does not know its input shape", "--input-shape 1,3,H,W"),
])
def test_nothing_known_is_refused_naming_what_to_pass(given: dict, lacks: str, asks: str) -> None:
    with pytest.raises(ModelLoadError, match=lacks) as err:
        resolve_preprocessing(None, given, what="m.pt", channels=3)
    assert f"pass what the model was trained with: {asks} " in err.value.hint
    assert "--preprocessing imagenet|fashion-mnist|mnist|cifar10|arch" in err.value.hint


def test_the_api_names_keywords() -> None:
    with pytest.raises(ModelLoadError) as err:
        resolve_preprocessing(None, {"input_shape": (1, 3, 8, 8)}, what="net", api=True)
    assert "mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)" in err.value.hint
    assert "preprocessing='imagenet'" in err.value.hint and "--" not in err.value.hint
    _, prov = resolve_preprocessing(None, {"input_shape": (1, 3, 8, 8), "mean": (0.5,),
                                           "std": (0.5,)}, what="net", api=True)
    assert prov["shape"] == "input_shape=" and prov["mean"] == "mean="


def test_bad_presets_and_keys_are_named() -> None:
    with pytest.raises(InputError, match="unknown preprocessing preset 'cifar'; did you mean "
                                         "'cifar10'"):
        resolve_preprocessing(None, {"preset": "cifar"}, what="m.pt")
    with pytest.raises(InputError, match="preset imagenet is for 3-channel inputs; m.pt takes 1"):
        resolve_preprocessing(None, {"preset": "imagenet"}, what="m.pt", channels=1)
    with pytest.raises(InputError, match="unknown preprocessing key 'men'; did you mean 'mean'"):
        resolve_preprocessing(None, {"men": (0.5,)}, what="m.pt")


def test_a_recipe_follows_the_same_rule(tmp_path) -> None:
    """A recipe's model.path state_dict: no input keys is a ConfigError naming the recipe keys
    (input.mean, input.preprocessing), and input.preprocessing names a preset."""
    import torch
    import torchvision
    import yaml

    from edgekit.errors import ConfigError
    from edgekit.recipe import load_recipe
    from edgekit.recipe_run import load_bundle

    torch.save(torchvision.models.mobilenet_v3_small(num_classes=4).state_dict(),
               tmp_path / "m.pt")
    recipe = {"recipe_version": 1, "name": "mine",
              "model": {"path": "m.pt", "arch": "torchvision.models:mobilenet_v3_small",
                        "arch_kwargs": {"num_classes": 4}},
              "data": {"eval": "fashion-mnist:test"}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(ConfigError, match="input: .*does not record its preprocessing") as err:
        load_bundle(load_recipe(path), tmp_path / "m.pt")
    assert "input.preprocessing: imagenet" in err.value.hint and "input.mean" in err.value.hint
    recipe["input"] = {"preprocessing": "imagenet", "shape": [1, 3, 64, 64], "resize": 64}
    path.write_text(yaml.safe_dump(recipe))
    bundle = load_bundle(load_recipe(path), tmp_path / "m.pt")
    assert bundle.spec.shape == (1, 3, 64, 64) and bundle.spec.resize == 64
    assert bundle.spec.mean == PRESETS["imagenet"].mean
    assert bundle.provenance["mean"] == "preset imagenet"
