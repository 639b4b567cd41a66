"""Pruning through channel shuffles (torchvision's ShuffleNetV2, edgekit.passes.shuffle_prune):
Torch-Pruning 1.6 divided by zero tracing the shuffle's reshape; edgekit keeps the width that
crosses the shuffle and prunes the channels inside each unit's branches, exactly the right ones."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")
torchvision = pytest.importorskip("torchvision")

from edgekit.passes.prune import PruneOptions, prune_model  # noqa: E402
from edgekit.passes.prune_graph import channel_width as _width  # noqa: E402
from edgekit.passes.prune_graph import prunable_layers as _prunable_layers  # noqa: E402
from edgekit.passes.stats import model_cost  # noqa: E402
from edgekit.spec import InputSpec  # noqa: E402

SPEC = InputSpec(shape=(1, 3, 32, 32), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def _shufflenet():
    torch.manual_seed(0)
    model = torchvision.models.shufflenet_v2_x0_5(num_classes=10).eval()
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model


def test_shufflenet_prunes_the_dead_inner_channels_and_keeps_its_outputs():
    """Half of the inner channels of every unit's branch are dead (the 1×1 conv's rows, both
    BatchNorms' scale and shift, the depthwise filters and the last 1×1 conv's columns zero): at
    ratio 0.3 the pruned units lose only dead channels, so the logits do not change; the width
    that crosses each shuffle stays, with the reason."""
    model = _shufflenet()
    units = [m for m in model.modules() if type(m).__name__ == "InvertedResidual"]
    assert len(units) == 16
    with torch.no_grad():
        for unit in units:
            b = unit.branch2
            width = b[0].out_channels
            dead = list(range(0, width, 2))
            b[0].weight[dead] = 0
            b[1].weight[dead] = 0
            b[1].bias[dead] = 0
            b[3].weight[dead] = 0
            b[4].weight[dead] = 0
            b[4].bias[dead] = 0
            b[5].weight[:, dead] = 0
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = model(x)
    before = model_cost(model, SPEC)["macs"]
    # the stem and the last 1×1 conv have no dead channels: they keep theirs here
    result = prune_model(model, SPEC, ratio=0.3,
                         options=PruneOptions(ignore=["conv1.0", "conv5.0"]))
    widths = {n: _width(m) for n, m in _prunable_layers(model).items()}
    pruned = {p["layer"]: (p["before"], p["after"]) for p in result.pruned}
    for i, unit_name in enumerate(n for n, m in model.named_modules()
                                  if type(m).__name__ == "InvertedResidual"):
        inner = f"{unit_name}.branch2.0"
        width = units[i].branch2[5].out_channels
        assert pruned[inner] == (width, int(width * 0.7)), inner
        assert widths[f"{unit_name}.branch2.3"] == int(width * 0.7)
        assert widths[f"{unit_name}.branch2.5"] == width  # crosses the shuffle: kept
    skipped = {s["layer"]: s["reason"] for s in result.skipped}
    assert "channel shuffle" in skipped["stage2.0.branch2.5"]
    with torch.no_grad():
        after = model(x)
    assert torch.allclose(after, reference, atol=1e-5), (after - reference).abs().max()
    assert model_cost(model, SPEC)["macs"] < 0.85 * before


def test_shufflenet_prunes_at_the_default_settings_and_runs():
    """`--prune 0.3` on ShuffleNetV2 as the matrix runs it: the stem, every unit's inner
    channels and the last conv lose channels; the shuffles' library function is restored."""
    from torchvision.models import shufflenetv2

    original = shufflenetv2.channel_shuffle
    model = _shufflenet()
    before = model_cost(model, SPEC)["macs"]
    result = prune_model(model, SPEC, ratio=0.3)
    assert shufflenetv2.channel_shuffle is original
    assert not any(n.endswith("edgekit_channel_shuffle") for n, _ in model.named_modules())
    layers = {p["layer"] for p in result.pruned}
    assert {"conv1.0", "conv5.0", "stage4.3.branch2.0"} <= layers
    assert len(layers) == 35
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert model_cost(model, SPEC)["macs"] < 0.75 * before
