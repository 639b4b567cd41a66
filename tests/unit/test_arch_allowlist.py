"""A model file names only listed model factories (issue 13, item 1).

Walks every public callable of the modules a file could once reach by prefix (edgekit.zoo*,
torchvision.models and all its submodules) and shows that only the registered model builders are
accepted when a file names them, that their kwargs cannot choose weights, URLs or paths, and that
building one downloads nothing."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import urllib.request
from pathlib import Path

import pytest
import torch

from edgekit.errors import ModelLoadError, UnsafeModelError
from edgekit.io.archs import check_file_kwargs, file_factory, model_factories, offline_kwargs
from edgekit.io.models import build_arch, load_model, save_checkpoint


def _modules(package: str) -> list:
    root = importlib.import_module(package)
    found = [root]
    for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
        try:
            found.append(importlib.import_module(info.name))
        except ImportError:  # an optional dependency of one submodule
            continue
    return found


def _public_callables() -> list[tuple[str, object]]:
    """(module:attr, object) for every public callable of edgekit.zoo* and torchvision.models*,
    including what a module re-exports (load_state_dict_from_url in torchvision.models._api)."""
    out = []
    for module in _modules("edgekit.zoo") + _modules("torchvision.models"):
        for attr in dir(module):
            if attr.startswith("__"):
                continue
            obj = getattr(module, attr, None)
            if callable(obj):
                out.append((f"{module.__name__}:{attr}", obj))
    return out


def _registered_builders() -> set[int]:
    """The oracle, from the libraries' own registries, not from edgekit.io.archs."""
    import torchvision.models as tvm

    from edgekit import zoo

    builders = {id(tvm.get_model_builder(name)) for name in tvm.list_models()}
    for factory in zoo.ARCHITECTURES:
        module, _, attr = factory.partition(":")
        builders.add(id(getattr(importlib.import_module(module), attr)))
    return builders


def test_only_registered_model_builders_are_accepted_from_a_file() -> None:
    builders = _registered_builders()
    accepted, refused = [], []
    for name, obj in _public_callables():
        try:
            factory = file_factory(name)
        except UnsafeModelError:
            refused.append(name)
            continue
        assert id(factory) in builders and factory is obj, name
        accepted.append(name)
    # What the prefix allowlist let through, now refused.
    for name in ("torchvision.models._api:load_state_dict_from_url", "torchvision.models:get_model",
                 "torchvision.models:get_weight", "torchvision.models:get_model_weights",
                 "torchvision.models:get_model_builder", "torchvision.models:list_models",
                 "torchvision.models.resnet:ResNet", "torchvision.models.resnet:ResNet18_Weights",
                 "torchvision.models.detection.backbone_utils:resnet_fpn_backbone",
                 "torchvision.models._utils:_ovewrite_named_param", "edgekit.zoo:build",
                 "edgekit.zoo:get_entry", "edgekit.zoo.train:train_zoo_model",
                 "edgekit.zoo.models:LeNet5"):
        assert name in refused, name
    # Every registered builder is reachable, under its registered name and its module.
    import torchvision.models as tvm

    for name in tvm.list_models():
        assert file_factory(f"torchvision.models:{name}") is tvm.get_model_builder(name)
    assert "torchvision.models:resnet18" in accepted
    assert "torchvision.models.resnet:resnet18" in accepted
    assert "edgekit.zoo:lenet5" in accepted and "edgekit.zoo:cnn_gru" in accepted
    assert "edgekit.zoo:resnet18_small" in accepted  # the optimize benchmark's ResNet-18
    assert len(accepted) >= len(tvm.list_models()) and len(refused) > 500


@pytest.mark.parametrize("arch", ["os:system", "builtins:eval", "subprocess:run",
                                  "torch.hub:load", "torch:load", "edgekit.zoo", "lenet5", ""])
def test_names_outside_the_list_are_refused_without_importing(arch: str) -> None:
    with pytest.raises(UnsafeModelError) as err:
        file_factory(arch)
    assert "--arch yourself" in err.value.hint and "--trust-model" in err.value.hint


def test_non_string_arch_is_an_input_error() -> None:
    with pytest.raises(ModelLoadError, match="not a 'module:factory' string"):
        file_factory(["edgekit.zoo:lenet5"])


@pytest.mark.parametrize("kwargs", [
    {"weights": "DEFAULT"}, {"weights": None}, {"weights_backbone": "IMAGENET1K_V1"},
    {"pretrained": True}, {"pretrained_cfg_overlay": {"file": "x.pt"}},
    {"url": "file:///tmp/payload.pt"}, {"model_dir": "cache"}, {"checkpoint_path": "x"},
    {"num_classes": 10, "head": {"source": "http://example.com/w.pt"}},
    {"norm_layer": "../../evil"}, {"block": ["a", "/etc/passwd"]},
])
def test_file_kwargs_that_fetch_are_refused(kwargs: dict) -> None:
    with pytest.raises(UnsafeModelError, match="may not choose weights, URLs, paths"):
        check_file_kwargs("torchvision.models:resnet18", kwargs)


@pytest.mark.parametrize("kwargs", [{}, {"num_classes": 10}, {"init_weights": True},
                                    {"drop_path_rate": 0.1, "dropout": 0.2, "width_mult": 0.5},
                                    {"norm": "batch", "channels": [16, 32]}])
def test_shape_kwargs_pass(kwargs: dict) -> None:
    check_file_kwargs("torchvision.models:resnet18", kwargs)


def test_every_builder_is_called_with_its_weights_off() -> None:
    """Detection builders default weights_backbone to ImageNet weights (a download): a file's
    arch gets every weights*/pretrained* parameter set to None (or False)."""
    for arch, factory in model_factories().items():
        kwargs = offline_kwargs(factory, {"num_classes": 3})
        for name in inspect.signature(factory).parameters:
            if name.startswith(("weights", "pretrained")):
                assert kwargs[name] in (None, False), (arch, name)
        assert kwargs["num_classes"] == 3


def test_building_a_listed_detector_downloads_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args, **kwargs):
        raise AssertionError(f"edgekit tried to download: {args[:1]}")

    import torch.hub
    import torchvision.models._api as tv_api

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", no_network)
    # Its defaults (weights_backbone=MobileNet_V3_Large_Weights.IMAGENET1K_V1) would download.
    model = build_arch("torchvision.models.detection:fasterrcnn_mobilenet_v3_large_320_fpn",
                       {"num_classes": 3}, trusted=False)
    assert isinstance(model, torch.nn.Module)


def test_checkpoint_with_huge_kwargs_is_refused_before_allocating(tmp_path: Path) -> None:
    """num_classes=10**8 on lenet5 is 8.5e9 parameters: refused from a meta-device build."""
    from edgekit.zoo import build

    bundle = build("lenet5")
    bundle.arch_kwargs = {"num_classes": 10**8}
    path = save_checkpoint(bundle, tmp_path / "big.pt")
    with pytest.raises(ModelLoadError, match="8,500,084,972 parameter values"):
        load_model(path)


def test_user_typed_arch_is_the_users_choice(tmp_path: Path) -> None:
    """--arch on the command line may be any importable module:callable (here a local one)."""
    (tmp_path / "mymodels.py").write_text(
        "import torch\n"
        "def tiny(num_classes=10):\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, num_classes))\n")
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        model = build_arch("mymodels:tiny", {"num_classes": 4}, trusted=True)
        torch.save(model.state_dict(), tmp_path / "sd.pt")
        bundle = load_model(tmp_path / "sd.pt", arch="mymodels:tiny",
                            arch_kwargs='{"num_classes": 4}', input_shape=(1, 1, 28, 28),
                            preprocessing={"mean": (0.5,), "std": (0.5,)})
        assert bundle.model(torch.zeros(2, 1, 28, 28)).shape == (2, 4)
        with pytest.raises(UnsafeModelError):  # the same arch named by a file is refused
            build_arch("mymodels:tiny", {}, trusted=False)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("mymodels", None)


def test_timm_models_by_name_with_pretrained_off() -> None:
    timm = pytest.importorskip("timm", reason="timm is not installed (an optional model source)")
    name = timm.list_models()[0]
    factory = file_factory(f"timm:{name}")
    assert factory.func is timm.create_model and factory.args == (name,)
    assert factory.keywords == {"pretrained": False}
    with pytest.raises(UnsafeModelError):
        file_factory("timm:create_model_that_does_not_exist")
    with pytest.raises(UnsafeModelError):
        check_file_kwargs(f"timm:{name}", {"pretrained_cfg_overlay": {"file": "/tmp/w.pt"}})
