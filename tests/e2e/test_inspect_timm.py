"""`edgekit inspect` on timm models (issue 27, part 1): which layers each pass touches and which
it leaves alone, and why — squeeze-excite layers (mobilenetv3_small_100) and attention whose
heads the pruner cannot remove (mobilevit_xxs), as for torchvision's models."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

timm = pytest.importorskip("timm", reason="timm is not installed (edgekit[timm])")

IMAGENET = ("--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225")


def _inspect(capsys, tmp_path: Path, name: str, classes: int) -> dict:
    import torch

    from tests.helpers import cli

    torch.manual_seed(0)
    torch.save(timm.create_model(name, num_classes=classes).state_dict(), tmp_path / "m.pt")
    code, out, err = cli(capsys, "inspect", tmp_path / "m.pt", "--arch", f"timm:{name}",
                         "--arch-kwargs", json.dumps({"num_classes": classes}), "--input-shape",
                         "1,3,64,64", *IMAGENET, "--json")
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]  # inspect writes nothing
    return json.loads(out)


def test_inspect_a_timm_model_with_attention_keeps_its_heads_and_prunes_the_rest(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """mobilevit_xxs: timm's Attention reshapes its heads' output to the input width, so heads
    cannot be removed. The dry run keeps every layer's heads (--prune-heads 0, the error's own
    hint) and says so; the rest is pruned, and the next command carries --prune-heads 0, with
    which prune_model prunes a fresh copy that still runs."""
    import torch

    from edgekit.passes.prune import PruneOptions, prune_model
    from edgekit.spec import InputSpec

    report = _inspect(capsys, tmp_path, "mobilevit_xxs", 4)
    prune = report["passes"]["prune"]
    assert prune["applies"] is True and len(prune["touches"]) >= 20, prune
    kept = [leave for leave in prune["leaves"] if "(--prune-heads 0)" in leave["reason"]]
    assert [leave["layer"] for leave in kept] == ["stages.2.1.transformer.0.attn"]
    assert "does not follow num_heads × head_dim" in kept[0]["reason"]
    assert {"layer": "head.fc", "reason": "final classifier (never pruned)"} in prune["leaves"]
    assert prune["flags"] == ["--prune-heads", "0"]
    words = shlex.split(report["next"])
    assert words[words.index("--prune") + 1:words.index("--prune") + 4] == [
        "0.3", "--prune-heads", "0"]
    model = timm.create_model("mobilevit_xxs", num_classes=4).eval()
    before = sum(p.numel() for p in model.parameters())
    spec = InputSpec(shape=(1, 3, 64, 64), mean=(0.5,), std=(0.5,))
    result = prune_model(model, spec, ratio=0.3, options=PruneOptions(head_ratio=0.0))
    assert len(result.pruned) == len(prune["touches"])
    assert sum(p.numel() for p in model.parameters()) < 0.8 * before
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 4)


def test_inspect_a_timm_model_with_squeeze_excite(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    """mobilenetv3_small_100: the squeeze-excite layers are pruned with their blocks, the
    classifier is left (never pruned), the one SE layer too narrow for round_to 8 is named, and
    dwsep leaves the layers that are already depthwise or pointwise."""
    report = _inspect(capsys, tmp_path, "mobilenetv3_small_100", 7)
    assert report["arch"] == "timm:mobilenetv3_small_100" and report["classes"]["count"] == 7
    prune = report["passes"]["prune"]
    assert prune["applies"] is True and prune["flags"] == []
    assert prune["leaves"] == [{"layer": "classifier", "reason": "final classifier (never pruned)"}]
    assert sum(".se.conv_reduce" in layer for layer in prune["touches"]) == 9
    assert prune["round_to_8"] == ("prunes; keeps whole (too narrow for round_to 8): "
                                   "blocks.0.0.se.conv_reduce")
    dwsep = report["passes"]["dwsep"]
    reasons = {leave["layer"]: leave["reason"] for leave in dwsep["leaves"]}
    assert reasons["blocks.0.0.conv_dw"] == "already grouped (groups=16)"
    assert reasons["blocks.0.0.se.conv_reduce"] == "1×1: already pointwise"
