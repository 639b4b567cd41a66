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
