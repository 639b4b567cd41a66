"""edgekit.io.archmatch: a plain state_dict is matched to the torchvision classification model
whose every key and shape it holds, the classifier's width giving num_classes (issue 27:
`edgekit inspect model.pt` names the complete --arch/--arch-kwargs flags)."""

from __future__ import annotations

import pytest

torchvision = pytest.importorskip("torchvision")


def test_a_torchvision_state_dict_is_matched_with_its_class_count(tmp_path) -> None:
    import torch

    from edgekit.io.archmatch import match_file, torchvision_matches

    assert torchvision_matches(torchvision.models.resnet18(num_classes=7).state_dict()) == [
        ("torchvision.models:resnet18", {"num_classes": 7})]
    torch.save(torchvision.models.squeezenet1_1().state_dict(), tmp_path / "sq.pt")
    assert match_file(tmp_path / "sq.pt") == [("torchvision.models:squeezenet1_1", {})]


def test_a_state_dict_of_another_model_matches_nothing(tmp_path, capsys) -> None:
    """Its own model (no torchvision builder has its keys), a resnet18 missing a layer: no
    guess, and inspect keeps the generic hint."""
    import torch

    from edgekit.io.archmatch import torchvision_matches
    from tests.helpers import cli, tiny_se_model

    assert torchvision_matches(tiny_se_model().state_dict()) == []
    weights = torchvision.models.resnet18().state_dict()
    del weights["layer4.1.bn2.running_var"]
    assert torchvision_matches(weights) == []
    torch.save(tiny_se_model().state_dict(), tmp_path / "se.pt")
    code, _, err = cli(capsys, "inspect", tmp_path / "se.pt")
    assert code == 2 and "pass --arch module:factory" in err and "next:" not in err


@pytest.mark.parametrize("command", [
    ["compress", "--prune", "0.3", "-o", "{out}"],
    ["export", "--target", "onnx", "-o", "{out}"],
    ["optimize", "--train", "{folder}", "--eval", "{folder}", "-o", "{out}"],
])
def test_every_command_names_the_matched_arch_of_a_bare_state_dict(tmp_path, capsys,
                                                                   command) -> None:
    """compress, export and optimize refuse a bare torchvision state_dict (no --arch) with the
    same complete --arch/--arch-kwargs flags as inspect, not the generic resnet18 example;
    exit 2 and nothing written."""
    import torch

    from tests.helpers import cli

    torch.save(torchvision.models.squeezenet1_1(num_classes=5).state_dict(), tmp_path / "m.pt")
    (tmp_path / "folder").mkdir()
    out = tmp_path / "out"
    args = [a.format(out=out, folder=tmp_path / "folder") for a in command]
    code, _, err = cli(capsys, args[0], tmp_path / "m.pt", *args[1:])
    assert code == 2, err
    assert "is a plain state_dict" in err
    assert ("pass --arch torchvision.models:squeezenet1_1 --arch-kwargs '{\"num_classes\": 5}'"
            in err), err
    assert "resnet18" not in err
    assert not out.exists() or not any(out.iterdir())


def _printed_arch_flags(err: str) -> list[str]:
    """The --arch/--arch-kwargs flags of an error's hint, parsed as a shell would."""
    import re
    import shlex

    found = re.search(r"hint: pass (--arch \S+(?: --arch-kwargs '[^']*')?)", err)
    assert found, err
    return shlex.split(found.group(1))


def test_a_timm_state_dict_is_matched_and_the_printed_flags_load_it(tmp_path, capsys) -> None:
    """A bare state_dict of timm's mobilenetv3_small_100 at 7 classes: inspect names
    `--arch timm:mobilenetv3_small_100 --arch-kwargs '{"num_classes": 7}'` (and the model with
    the same keys and shapes, tf_mobilenetv3_small_100, as the alternative), and those flags,
    pasted, load it: inspect --json reports the architecture, 7 classes, its parameters."""
    import json

    import torch

    timm = pytest.importorskip("timm", reason="timm is not installed (edgekit[timm])")
    from tests.helpers import cli

    model = timm.create_model("mobilenetv3_small_100", num_classes=7)
    torch.save(model.state_dict(), tmp_path / "m.pt")
    code, _, err = cli(capsys, "inspect", tmp_path / "m.pt")
    assert code == 2, err
    flags = _printed_arch_flags(err)
    assert flags == ["--arch", "timm:mobilenetv3_small_100", "--arch-kwargs",
                     '{"num_classes": 7}']
    assert "timm:tf_mobilenetv3_small_100" in err
    code, out, err = cli(capsys, "inspect", tmp_path / "m.pt", *flags, "--input-shape",
                         "1,3,64,64", "--mean", "0.485,0.456,0.406", "--std",
                         "0.229,0.224,0.225", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["arch"] == "timm:mobilenetv3_small_100"
    assert report["arch_kwargs"] == {"num_classes": 7}
    assert report["classes"]["count"] == 7
    assert report["params"] == sum(p.numel() for p in model.parameters())
    # given its preprocessing but no --arch, inspect goes on with the match and says so
    code, out, err = cli(capsys, "inspect", tmp_path / "m.pt", "--input-shape", "1,3,64,64",
                         "--preprocessing", "imagenet", "--json")
    assert code == 0, err
    assert ("architecture: matched by its keys and shapes: --arch timm:mobilenetv3_small_100 "
            """--arch-kwargs '{"num_classes": 7}' (so do timm:tf_mobilenetv3_small_100""") in err
    assert json.loads(out)["arch"] == "timm:mobilenetv3_small_100"


def test_timm_and_torchvision_resnet18_hold_one_layout(tmp_path) -> None:
    """timm's resnet18 and torchvision's have the same keys and shapes and compute the same
    function: a state_dict of either is matched to both, torchvision's named first (a blur-pool
    resnet, also of that layout, named too), each with num_classes."""
    import torch

    timm = pytest.importorskip("timm", reason="timm is not installed (edgekit[timm])")
    from edgekit.io.archmatch import state_dict_matches

    torch.manual_seed(0)
    weights = timm.create_model("resnet18", num_classes=4).state_dict()
    matches = state_dict_matches(weights)
    assert matches[:2] == [("torchvision.models:resnet18", {"num_classes": 4}),
                           ("timm:resnet18", {"num_classes": 4})]
    assert ("timm:resnetblur18", {"num_classes": 4}) in matches
    assert state_dict_matches(torchvision.models.resnet18(num_classes=4).state_dict()) == matches
    ours, theirs = torchvision.models.resnet18(num_classes=4), timm.create_model("resnet18",
                                                                                 num_classes=4)
    ours.load_state_dict(weights)
    theirs.load_state_dict(weights)
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(ours.eval()(x), theirs.eval()(x))


def test_regnets_are_built_on_the_meta_device() -> None:
    """torchvision's RegNets compute their widths with torch.arange(...).tolist(), which has no
    data under `with torch.device("meta")`: built with only their weights on meta, they have a
    real build's keys and shapes, and a RegNet state_dict is matched."""
    import torch

    from edgekit.io.archmatch import torchvision_matches
    from edgekit.io.model_build import build_on_meta

    register_parameter = torch.nn.Module.register_parameter
    builder = torchvision.models.get_model_builder("regnet_y_400mf")
    meta = build_on_meta(builder, {"num_classes": 3}).state_dict()
    assert {t.device.type for t in meta.values()} == {"meta"}
    real = builder(num_classes=3).state_dict()
    assert {k: tuple(v.shape) for k, v in meta.items()} == \
        {k: tuple(v.shape) for k, v in real.items()}
    assert torch.nn.Module.register_parameter is register_parameter  # restored
    weights = torchvision.models.regnet_x_400mf(num_classes=3).state_dict()
    assert torchvision_matches(weights) == [("torchvision.models:regnet_x_400mf",
                                             {"num_classes": 3})]


def test_meta_builds_skip_initialisers_and_keep_every_shape() -> None:
    """build_on_meta skips the weight initialisers (nothing to initialise on meta) and gives the
    keys and shapes of a real build; outside it, initialisers work as before."""
    import torch

    timm = pytest.importorskip("timm", reason="timm is not installed (edgekit[timm])")
    import functools

    from edgekit.io.model_build import build_on_meta

    for factory in (functools.partial(timm.create_model, "efficientnet_b0", pretrained=False),
                    torchvision.models.mobilenet_v3_small):
        meta = build_on_meta(factory).state_dict()
        real = factory().state_dict()
        assert {k: tuple(v.shape) for k, v in meta.items()} == \
            {k: tuple(v.shape) for k, v in real.items()}
    x = torch.zeros(1000)
    torch.nn.init.normal_(x)
    assert float(x.std()) > 0.5


def test_a_searched_layout_is_answered_from_the_index(tmp_path, monkeypatch) -> None:
    """The first search fills edgekit's cache folder's archmatch-index.json; the same layout
    searched again, in a new process, is answered from it without importing torchvision."""
    import json
    import os
    import subprocess
    import sys

    import torch

    from edgekit.io.archmatch import INDEX_FILE, torchvision_matches

    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path))
    torch.save(torchvision.models.squeezenet1_1(num_classes=3).state_dict(), tmp_path / "m.pt")
    expected = [("torchvision.models:squeezenet1_1", {"num_classes": 3})]
    assert torchvision_matches(torch.load(tmp_path / "m.pt")) == expected
    index = json.loads((tmp_path / INDEX_FILE).read_text())
    (entry,) = [e for k, e in index["libraries"].items() if k.startswith("torchvision ")]
    assert len(entry["names"]) == len(torchvision.models.list_models(module=torchvision.models))
    program = ("import sys, torch, json; from edgekit.io.archmatch import torchvision_matches; "
               f"m = torchvision_matches(torch.load({str(tmp_path / 'm.pt')!r})); "
               "print(json.dumps([m, 'torchvision' in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          env={**os.environ, "EDGEKIT_CACHE": str(tmp_path)}, timeout=300)
    assert done.returncode == 0, done.stderr
    found, imported = json.loads(done.stdout)
    assert [tuple(m) for m in found] == expected and imported is False


def test_the_shipped_index_holds_every_model_of_the_pinned_versions() -> None:
    """edgekit/_data/archmatch/index.json (scripts/archmatch-index.py) holds every torchvision
    classification model of the pinned torchvision and torch (and every timm model when the
    installed timm is the one it was built with), each as a build on meta records it now: a
    first search builds only its matches. A new pin fails here until the script is rerun."""
    import json
    from importlib import metadata, resources

    from edgekit.io.archmatch import INDEX_FORMAT, _record

    shipped = json.loads(resources.files("edgekit").joinpath(
        "_data", "archmatch", "index.json").read_text())
    assert shipped["format"] == INDEX_FORMAT
    libraries = shipped["libraries"]
    torch_version = metadata.version("torch")
    key = f"torchvision {metadata.version('torchvision')} torch {torch_version}"
    assert key in libraries, f"rerun scripts/archmatch-index.py ({sorted(libraries)})"
    entry = libraries[key]
    assert entry["names"] == torchvision.models.list_models(module=torchvision.models)
    assert set(entry["models"]) == set(entry["names"])
    assert not [n for n, r in entry["models"].items() if "error" in r]  # RegNets included
    for name in ("resnet18", "regnet_y_400mf", "mobilenet_v3_small"):
        assert entry["models"][name] == _record("torchvision", name)
    try:
        timm_key = f"timm {metadata.version('timm')} torch {torch_version}"
    except metadata.PackageNotFoundError:
        return
    if timm_key in libraries:
        timm_entry = libraries[timm_key]
        assert set(timm_entry["models"]) == set(timm_entry["names"])
        assert timm_entry["models"]["mobilenetv3_small_100"] == _record(
            "timm", "mobilenetv3_small_100")
