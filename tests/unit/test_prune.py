"""The prune pass: importances, local/global, round_to, MACs targets, reports, bad input."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from edgekit.errors import ConfigError, DataError, EdgekitError  # noqa: E402
from edgekit.passes.base import PassContext  # noqa: E402
from edgekit.passes.prune import (  # noqa: E402
    PruneError,
    PruneOptions,
    PrunePass,
    WipeoutError,
    compute_gradients,
    prune_model,
    prune_to_target,
)
from edgekit.passes.stats import model_cost  # noqa: E402
from edgekit.spec import InputSpec  # noqa: E402
from edgekit.zoo import build  # noqa: E402


def _zoo(name: str):
    torch.manual_seed(0)
    bundle = build(name)
    bundle.model.eval()
    return bundle


def _widths(model) -> dict[str, int]:
    from edgekit.passes.prune_graph import channel_width, prunable_layers

    return {n: channel_width(m) for n, m in prunable_layers(model).items()}


# ---------------------------------------------------------------- importances
@pytest.mark.parametrize("importance", ["l1", "l2", "taylor", "bn-scale"])
def test_each_importance_removes_the_dead_channels(importance):
    """Half of the first conv's channels are dead (weights, BN scale/shift and the next conv's
    input columns zero): every importance must score them lowest and remove exactly them, so the
    outputs do not change."""
    bundle = _zoo("cnn_gru")
    model = bundle.model
    dead = [1, 2, 5, 7, 8, 11, 12, 14]
    with torch.no_grad():
        model.features[0].weight[dead] = 0
        model.features[1].weight[dead] = 0
        model.features[1].bias[dead] = 0
        model.features[4].weight[:, dead] = 0
    x = torch.randn(32, 1, 28, 28)
    with torch.no_grad():
        reference = model(x)
    if importance == "taylor":
        compute_gradients(model, x, torch.randint(0, 10, (32,)), batch_size=16)
    live_rows = model.features[0].weight.detach()[[i for i in range(16) if i not in dead]].clone()
    result = prune_model(model, bundle.spec, ratio=0.5,
                         options=PruneOptions(importance=importance, ignore=["features.4"], rnn_hidden=False))
    assert model.features[0].out_channels == 8
    torch.testing.assert_close(model.features[0].weight.detach(), live_rows)
    assert [p["layer"] for p in result.pruned] == ["features.0"]
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference, atol=1e-5, rtol=1e-5)
    assert all(p.grad is None for p in model.parameters())


def test_taylor_without_gradients_is_an_error():
    bundle = _zoo("lenet5")
    with pytest.raises(PruneError, match="needs gradients"):
        prune_model(bundle.model, bundle.spec, ratio=0.5, options=PruneOptions(importance="taylor"))


def test_bn_scale_on_a_model_without_batchnorm_says_so():
    bundle = _zoo("lenet5")
    with pytest.raises(PruneError, match="BatchNorm") as err:
        prune_model(bundle.model, bundle.spec, ratio=0.5,
                    options=PruneOptions(importance="bn-scale"))
    assert "l1" in err.value.hint


# ---------------------------------------------------------------- what gets pruned
def test_local_pruning_halves_every_layer_but_the_classifier():
    bundle = _zoo("lenet5")
    before = model_cost(bundle.model, bundle.spec)
    result = prune_model(bundle.model, bundle.spec, ratio=0.5)
    assert _widths(bundle.model) == {"conv1": 8, "conv2": 16, "fc1": 60, "fc2": 42, "fc3": 10}
    after = model_cost(bundle.model, bundle.spec)
    assert before["macs"] / after["macs"] > 3.0
    assert result.skipped == [{"layer": "fc3", "type": "Linear", "channels": 10,
                               "reason": "final classifier (never pruned)"}]


def test_global_pruning_ranks_across_layers():
    bundle = _zoo("lenet5")
    prune_model(bundle.model, bundle.spec, ratio=0.5, options=PruneOptions(global_pruning=True))
    widths = _widths(bundle.model)
    assert widths["fc3"] == 10
    kept = sum(widths[n] for n in ("conv1", "conv2", "fc1", "fc2"))
    assert kept == (16 + 32 + 120 + 84) // 2
    assert {widths["conv1"] / 16, widths["conv2"] / 32, widths["fc1"] / 120} != {0.5}


@pytest.mark.parametrize("name", ["lenet5", "cnn_lstm"])
def test_round_to_keeps_multiples(name):
    bundle = _zoo(name)
    prune_model(bundle.model, bundle.spec, ratio=0.3, options=PruneOptions(round_to=8))
    widths = _widths(bundle.model)
    classifier = "fc3" if name == "lenet5" else "classifier"
    assert widths.pop(classifier) == 10
    assert all(w % 8 == 0 for w in widths.values()), widths
    if name == "cnn_lstm":
        assert widths == {"features.0": 8, "features.4": 16, "rnn": 88}


@pytest.mark.parametrize("name", ["cnn_gru", "cnn_lstm"])
def test_hybrids_prune_convs_rnn_inputs_and_hidden(name):
    bundle = _zoo(name)
    before = model_cost(bundle.model, bundle.spec)
    prune_model(bundle.model, bundle.spec, ratio=0.5)
    model = bundle.model
    assert model.features[4].out_channels == 16 and model.rnn.input_size == 16 * 7
    assert model.rnn.hidden_size == 64 and model.classifier.in_features == 64
    assert before["macs"] / model_cost(model, bundle.spec)["macs"] >= 2.0
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_torchvision_models_prune_at_half(name, tmp_path):
    """Random-init torchvision models at 224: 50% runs, MACs fall, and the pruned checkpoint
    reloads (weights_only) with the same outputs."""
    from edgekit.io.models import IMAGENET_SPEC, ModelBundle, load_model, save_checkpoint

    torch.manual_seed(0)
    torchvision = pytest.importorskip("torchvision")
    model = getattr(torchvision.models, name)().eval()
    before = model_cost(model, IMAGENET_SPEC)["macs"]
    result = prune_model(model, IMAGENET_SPEC, ratio=0.5, options=PruneOptions(round_to=8))
    after = model_cost(model, IMAGENET_SPEC)["macs"]
    assert before / after > 2.5
    assert [s["layer"] for s in result.skipped] == (["fc"] if name == "resnet18"
                                                     else ["classifier.1"])
    bundle = ModelBundle(model, IMAGENET_SPEC, f"torchvision.models:{name}")
    reloaded = load_model(save_checkpoint(bundle, tmp_path / "m.pt"))
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        out = model(x)
        assert out.shape == (1, 1000)
        torch.testing.assert_close(reloaded.model(x), out)


def test_target_macs_is_met_from_below():
    bundle = _zoo("lenet5")
    base = model_cost(bundle.model, bundle.spec)["macs"]
    pruned, result, fraction = prune_to_target(bundle.model, bundle.spec, 0.33)
    assert fraction == model_cost(pruned, bundle.spec)["macs"] / base
    assert 0.28 <= fraction <= 0.33
    assert 0.4 < result.ratio < 0.6
    assert _widths(bundle.model)["conv1"] == 16  # the original is untouched


def test_pass_reports_rows_meta_and_reasons(capsys):
    bundle = _zoo("cnn_gru")
    ctx = PassContext(out_dir=".")
    out = PrunePass({"target_macs": 0.4, "round_to": 4}).apply(bundle, ctx)
    row = ctx.report[-1]
    assert row["step"] == "prune" and row["macs"] <= 0.4 * 1963520
    assert row["skipped"] == ["classifier: final classifier (never pruned)"]
    assert out.meta["pruning"]["round_to"] == 4 and 0 < out.meta["pruning"]["ratio"] < 1
    assert {p["layer"] for p in out.meta["pruning"]["pruned"]} == {"features.0", "features.4",
                                                                   "rnn"}
    assert "kept classifier" in capsys.readouterr().err


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("config", [{"ratio": 1.5}, {"ratio": 0}, {"ratio": -0.2}, {"ratio": 1},
                                    {"target_macs": 1.0}, {"target_macs": 0}])
def test_fraction_outside_zero_one_is_refused(config):
    with pytest.raises(ConfigError, match=r"outside \(0, 1\)") as err:
        PrunePass(config)
    assert err.value.exit_code == 2 and err.value.hint


def test_neither_or_both_ratio_and_target():
    with pytest.raises(ConfigError, match="ratio or a target_macs"):
        PrunePass({})
    with pytest.raises(ConfigError, match="not both"):
        PrunePass({"ratio": 0.5, "target_macs": 0.3})
    with pytest.raises(ConfigError, match="unknown importance"):
        PrunePass({"ratio": 0.5, "importance": "l3"})


def test_ratio_that_empties_a_layer_is_an_error():
    bundle = _zoo("lenet5")
    with pytest.raises(WipeoutError, match="every channel of") as err:
        prune_model(bundle.model, bundle.spec, ratio=0.95)  # conv1: int(16 × 0.05) = 0
    assert "conv1 (16 channels)" in err.value.message
    assert err.value.exit_code == 2 and "--round-to" in err.value.hint
    rnn = _zoo("rowrnn")
    with pytest.raises(WipeoutError, match="every hidden unit of rnn"):
        prune_model(rnn.model, rnn.spec, ratio=0.995)


class _SqueezeExcite(nn.Module):
    """MobileNetV3's squeeze-excite: a 1×1 squeeze to 8 channels, gating the block's output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.fc1 = nn.Conv2d(16, 8, 1)
        self.fc2 = nn.Conv2d(8, 16, 1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        x = F.relu(self.conv(x))
        scale = torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))
        x = F.relu(self.conv2(x * scale))
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


def test_round_to_never_empties_a_layer_and_says_which_it_kept():
    """round_to 8 on a squeeze of 8 channels at ratio 0.25: 6 remain, which round down to 0.
    Torch-Pruning then drops the layer's group, which edgekit refused as a wipe-out; now the
    squeeze is kept whole with the reason, the other layers are pruned to multiples of 8, and a
    layer wider than round_to that would round to 0 keeps one multiple of it."""
    torch.manual_seed(0)
    model = _SqueezeExcite().eval()
    spec = InputSpec().with_shape((1, 3, 16, 16))
    result = prune_model(model, spec, ratio=0.25, options=PruneOptions(round_to=8))
    widths = _widths(model)
    assert widths == {"conv": 8, "fc1": 8, "fc2": 8, "conv2": 24, "head": 10}
    kept = {s["layer"]: s["reason"] for s in result.skipped}
    assert "round_to 8: 6 of its 8 channels would remain at ratio 0.25, which rounds down to " \
           "0; kept whole" == kept["fc1"]
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10)
    lenet = _zoo("lenet5")
    result = prune_model(lenet.model, lenet.spec, ratio=0.9, options=PruneOptions(round_to=16))
    assert _widths(lenet.model) == {"conv1": 16, "conv2": 16, "fc1": 16, "fc2": 16, "fc3": 10}
    assert "conv2 keeps 16 of 32 channels: round_to 16: 3 of its 32 channels would remain at " \
           "ratio 0.9, which rounds down to 0" in result.notes
    rnn = _zoo("rowrnn")
    result = prune_model(rnn.model, rnn.spec, ratio=0.9, options=PruneOptions(round_to=16))
    assert _widths(rnn.model)["rnn"] == 16


def test_unreachable_target_is_an_error():
    bundle = _zoo("lenet5")
    with pytest.raises(EdgekitError, match="target_macs 0.001 cannot be reached") as err:
        prune_to_target(bundle.model, bundle.spec, 0.001, steps=6)
    assert err.value.exit_code == 2


class FunctionalConv(nn.Module):
    """A conv written with F.conv2d and its own parameter: Torch-Pruning guesses its channel
    axis wrongly (the last non-singleton one)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, 3, 3) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, padding=1)


class Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.mix = FunctionalConv(8, 8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mix(F.relu(self.conv1(x)))
        return self.head(F.relu(self.conv2(x)).mean((2, 3)))


def test_untraceable_module_is_named_and_ignoring_it_works():
    spec = InputSpec(shape=(1, 1, 12, 12))
    with pytest.raises(PruneError, match="cannot trace mix") as err:
        prune_model(Untraceable().eval(), spec, ratio=0.5)
    assert "--prune-ignore 'mix'" in err.value.hint
    net = Untraceable().eval()
    result = prune_model(net, spec, ratio=0.5, options=PruneOptions(ignore=["mix"]))
    assert net.conv1.out_channels == 8 and net.conv2.out_channels == 8
    reasons = {s["layer"]: s["reason"] for s in result.skipped}
    assert reasons["conv1"] == "coupled to mix, which is in the ignore list"
    assert reasons["mix"] == "in the prune step's ignore list"
    assert any("Unwrapped parameters" in n for n in result.notes)


def test_forward_failure_after_pruning_names_the_module():
    """A module that hard-codes a channel count breaks after pruning: the error names it."""

    class Fixed(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.reshape(x.shape[0], 8, -1).mean(2)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 8, 3)
            self.squash = Fixed()
            self.head = nn.Linear(8, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.squash(self.conv(x)))

    spec = InputSpec(shape=(1, 1, 8, 8))
    with pytest.raises(PruneError) as err:
        prune_model(Net().eval(), spec, ratio=0.5)
    assert "fails at squash" in err.value.message and "'squash'" in err.value.hint
    net = Net().eval()
    result = prune_model(net, spec, ratio=0.5, options=PruneOptions(ignore=["squash"]))
    assert net.conv.out_channels == 8
    assert "ignore list" in {s["layer"]: s["reason"] for s in result.skipped}["conv"]


def test_pass_check_needs_data_for_taylor_and_valid_ignore_patterns():
    bundle = _zoo("lenet5")
    ctx = PassContext(out_dir=".")
    with pytest.raises(DataError, match="taylor importance needs labelled data"):
        PrunePass({"ratio": 0.5, "importance": "taylor"}).check(bundle, ctx)
    with pytest.raises(ConfigError, match="matches no layer") as err:
        PrunePass({"ratio": 0.5, "ignore": ["conv9"]}).check(bundle, ctx)
    assert "conv1" in err.value.hint
    PrunePass({"ratio": 0.5, "ignore": ["conv*"]}).check(bundle, ctx)


def test_distill_without_train_set_says_what_is_missing():
    from edgekit.passes.distill import DistillPass

    bundle = _zoo("lenet5")
    with pytest.raises(DataError, match="no --train") as err:
        DistillPass({"epochs": 1}).check(bundle, PassContext(out_dir="."))
    assert "--distill-epochs 0" in err.value.hint


class _Multiplier(nn.Module):
    """conv 3→8, then a depthwise conv with channel multiplier 2 (8→16, groups 8: FastViT's
    final_conv), then a 1×1 conv and the classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.mult = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1, groups=8), nn.BatchNorm2d(16),
                                  nn.ReLU())
        self.head = nn.Sequential(nn.Conv2d(16, 32, 1), nn.BatchNorm2d(32), nn.ReLU())
        self.fc = nn.Linear(32, 5)

    def forward(self, x):
        return self.fc(self.head(self.mult(self.stem(x))).mean((2, 3)))


def test_a_depthwise_conv_with_a_channel_multiplier_stays_and_the_rest_prunes():
    """Torch-Pruning 1.6 indexes a multiplier conv's weight like its inputs (IndexError in its
    importance, timm fastvit_t8's final_conv): the conv and the channels it reads and writes
    stay, with the reason; the layers not coupled to it are pruned."""
    torch.manual_seed(0)
    model = _Multiplier().eval()
    spec = InputSpec(shape=(1, 3, 16, 16), mean=(0.5,) * 3, std=(0.5,) * 3)
    result = prune_model(model, spec, ratio=0.5)
    kept = {r["layer"]: r["reason"] for r in result.skipped}
    assert "channel multiplier (8 → 16, groups 8)" in kept["mult.0"]
    assert "coupled to mult.0, a depthwise conv with a channel multiplier" in kept["stem.0"]
    assert [r["layer"] for r in result.pruned] == ["head.0"]
    assert (model.stem[0].out_channels, model.mult[0].out_channels,
            model.head[0].out_channels) == (8, 16, 16)
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 5)
