"""Channel slices Torch-Pruning cannot map (edgekit.passes.channel_slices) and the bound on Torch-Pruning's groups
(prune_graph.bounded_groups), on timm's rexnet_100 at 64×64 (random weights, seed 0): its
blocks add the shortcut into a channel slice, `cat([x[:, :C] + shortcut, x[:, C:]])`, which
made Torch-Pruning's groups grow without end (`edgekit inspect` ran past 600 s); and timm's
mobilevitv2_050, whose qkv_proj output splits into a 1-channel query and two halves."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")
timm = pytest.importorskip("timm")

from edgekit.passes import channel_slices  # noqa: E402
from edgekit.passes.prune import PruneOptions, prune_model  # noqa: E402
from edgekit.passes.prune_graph import PruneError, channel_width  # noqa: E402
from edgekit.spec import InputSpec  # noqa: E402

SPEC = InputSpec(shape=(1, 3, 64, 64), mean=(0.5,) * 3, std=(0.5,) * 3)


def _rexnet():
    torch.manual_seed(0)
    return timm.create_model("rexnet_100", num_classes=10).eval()


def _producers(model) -> list[str]:
    names = {m: n for n, m in model.named_modules()}
    kept = channel_slices.unmappable_producers(
        model, torch.zeros(SPEC.shape), lambda m: channel_width(m) is not None)
    return sorted(names[m] for m in kept)


def test_the_layers_feeding_a_partial_residual_are_found():
    model = _rexnet()
    shortcut_blocks = [i for i, block in enumerate(model.features) if getattr(block, "use_shortcut", False)]
    assert len(shortcut_blocks) == 11
    # each partial add reaches its own block's last 1x1 conv and the shortcut's (the block
    # before): every conv_pwl from block 1 on, and nothing else
    expected = sorted({f"features.{j}.conv_pwl.conv" for i in shortcut_blocks for j in (i - 1, i)})
    assert _producers(model) == expected


@pytest.mark.parametrize("arch", ["resnet18", "ghostnet_100", "mobilenetv3_small_100",
                                  "cspresnet50"])
def test_models_without_a_partial_residual_keep_nothing(arch):
    torch.manual_seed(0)
    assert _producers(timm.create_model(arch, num_classes=10).eval()) == []


def test_rexnet_prunes_inside_its_blocks_and_still_runs():
    model = _rexnet()
    x = torch.randn(2, *SPEC.shape[1:])
    before = sum(p.numel() for p in model.parameters())
    result = prune_model(model, SPEC, ratio=0.3, options=PruneOptions(round_to=8))
    after = sum(p.numel() for p in model.parameters())
    assert after < 0.7 * before  # 3.53M -> 2.21M measured
    kept = {r["layer"]: r["reason"] for r in result.skipped}
    assert "partial residual" in kept["features.7.conv_pwl.conv"]
    assert {r["layer"] for r in result.pruned} >= {"features.7.conv_exp.conv",
                                                   "features.7.conv_dw.conv"}
    assert model(x).shape == (2, 10)


def test_a_group_that_grows_without_end_is_refused_naming_its_layer(monkeypatch):
    """Without the partial-residual rule Torch-Pruning's group of a later conv_pwl never
    closes: the bound stops it with the layer named and the flag that keeps it whole."""
    monkeypatch.setattr(channel_slices, "unmappable_producers", lambda *a, **k: {})
    with pytest.raises(PruneError) as caught:
        prune_model(_rexnet(), SPEC, ratio=0.3)
    message = str(caught.value) + " " + (caught.value.hint or "")
    assert "grows past" in message
    assert "conv_pwl" in message and "--prune-ignore" in message


def test_an_uneven_channel_split_keeps_its_producer_and_the_rest_prunes():
    """mobilevitv2_050 was refused at every ratio ("would remove every channel of
    ...qkv_proj (257 channels)"): each qkv_proj now keeps its width with the reason, the
    rest prunes, and the model runs."""
    torch.manual_seed(0)
    model = timm.create_model("mobilevitv2_050", num_classes=10).eval()
    qkv = [n for n, m in model.named_modules() if n.endswith("attn.qkv_proj")]
    assert len(qkv) == 9 and _producers(model) == sorted(qkv)
    before = sum(p.numel() for p in model.parameters())
    result = prune_model(model, SPEC, ratio=0.3)
    kept = {r["layer"]: r["reason"] for r in result.skipped}
    assert all("unequal sizes (1, " in kept[n] for n in qkv)
    assert sum(p.numel() for p in model.parameters()) < 0.8 * before
    assert model(torch.randn(2, *SPEC.shape[1:])).shape == (2, 10)
