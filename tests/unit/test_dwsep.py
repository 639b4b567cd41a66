"""Depthwise-separable substitution: exact initialisation, layer selection, reporting, surgery
replay on load, bad configurations. No training here (see tests/e2e/test_compress_dwsep.py)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from edgekit.data.given import DataSources  # noqa: E402
from edgekit.errors import ConfigError, ModelLoadError  # noqa: E402
from edgekit.io.models import ModelBundle, load_model, save_checkpoint  # noqa: E402
from edgekit.passes import PassContext, get_pass  # noqa: E402
from edgekit.passes.dwsep import DwsepConfig, plan_layers, replay_dwsep  # noqa: E402
from edgekit.passes.dwsep_factor import (  # noqa: E402
    DepthwiseSeparable,
    PatchMoments,
    collect_moments,
    compose,
    conv_patches,
    factorize,
    max_rank,
    rank_error,
)
from edgekit.passes.stats import model_cost  # noqa: E402
from edgekit.spec import InputSpec  # noqa: E402
from edgekit.zoo.models import CNNGRU, LeNet5, RowRNN  # noqa: E402

GREY = InputSpec(shape=(1, 1, 28, 28))

GEOMETRIES = [
    dict(kernel_size=3),
    dict(kernel_size=3, padding=1),
    dict(kernel_size=5, stride=2, padding=2),
    dict(kernel_size=3, stride=(2, 1), dilation=2, padding=2, bias=False),
    dict(kernel_size=(3, 5), padding=(1, 2)),
    dict(kernel_size=3, padding="same", dilation=3),
    dict(kernel_size=3, padding=1, padding_mode="reflect"),
]


def run_pass(model: nn.Module, spec: InputSpec = GREY, arch: str = "edgekit.zoo:lenet5",
             train_source: str | None = None, **config):
    bundle = ModelBundle(model, spec, arch)
    ctx = PassContext(out_dir="unused", data=DataSources(train=train_source))
    bundle = get_pass("dwsep")(config).apply(bundle, ctx)
    return bundle, ctx.report


# ---------------------------------------------------------------- exactness
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: ",".join(f"{k}={v}" for k, v in g.items()))
def test_full_rank_is_exact_on_random_weights(geometry):
    torch.manual_seed(0)
    conv = nn.Conv2d(5, 12, **geometry).double()
    x = torch.randn(2, 5, 15, 17, dtype=torch.float64)
    module, info = DepthwiseSeparable.from_conv(conv, max_rank(conv))
    assert info["init_error"] < 1e-12 and info["init"] == "svd"
    assert module(x).shape == conv(x).shape
    torch.testing.assert_close(module(x), conv(x), rtol=1e-10, atol=1e-10)
    assert module.depthwise.groups == 5 and module.depthwise.out_channels == 5 * max_rank(conv)


@pytest.mark.parametrize("geometry", GEOMETRIES[:5], ids=str)
def test_rank_one_weights_are_exact_at_r1(geometry):
    torch.manual_seed(1)
    conv = nn.Conv2d(4, 9, **geometry)
    kh, kw = conv.kernel_size
    with torch.no_grad():  # every slice W[:, i] = u_i v_iᵀ has rank one
        u, v = torch.randn(4, 9), torch.randn(4, kh * kw)
        conv.weight.copy_(torch.einsum("io,ik->oik", u, v).reshape(9, 4, kh, kw))
    module, info = DepthwiseSeparable.from_conv(conv, 1)
    assert info["init_error"] < 1e-6
    x = torch.randn(3, 4, 16, 16)
    torch.testing.assert_close(module(x), conv(x), rtol=1e-4, atol=1e-4)


def test_float32_full_rank_matches_within_float_tolerance():
    torch.manual_seed(2)
    conv = nn.Conv2d(16, 32, 5)
    module, _ = DepthwiseSeparable.from_conv(conv, max_rank(conv))
    x = torch.randn(2, 16, 12, 12)
    torch.testing.assert_close(module(x), conv(x), rtol=1e-4, atol=1e-4)
    assert module.depthwise.weight.dtype == torch.float32


def test_error_is_the_svd_tail_and_shrinks_with_rank():
    torch.manual_seed(3)
    weight = torch.randn(8, 3, 3, 3, dtype=torch.float64)
    errors = [factorize(weight, r)[2] for r in range(1, 9)]
    assert all(a > b for a, b in zip(errors, errors[1:], strict=False))
    assert errors[-1] < 1e-12
    s = torch.linalg.svdvals(weight.permute(1, 0, 2, 3).reshape(3, 8, 9))
    expected = float((s[:, 2:].pow(2).sum() / s.pow(2).sum()).sqrt())
    assert errors[1] == pytest.approx(expected, rel=1e-9)
    dw, pw, _ = factorize(weight, 2)  # reconstruction from the returned factors
    rebuilt = compose(dw, pw, weight.shape)
    assert float((rebuilt - weight).norm() / weight.norm()) == pytest.approx(errors[1], rel=1e-9)


def test_batchnorm_option_adds_norm_and_activation():
    conv = nn.Conv2d(4, 8, 3, padding=1)
    module, _ = DepthwiseSeparable.from_conv(conv, 1, bn=True, activation="relu6")
    assert isinstance(module.norm, nn.BatchNorm2d) and module.norm.num_features == 4
    assert isinstance(module.act, nn.ReLU6)
    assert module(torch.randn(2, 4, 8, 8)).shape == (2, 8, 8, 8)


# ---------------------------------------------------------------- data-aware refinement
def correlated_inputs(n: int, channels: int, side: int = 12) -> torch.Tensor:
    """Smooth, channel-correlated, non-negative maps (like post-ReLU features), float64."""
    torch.manual_seed(5)
    base = torch.randn(n, 2, side, side, dtype=torch.float64)
    mix = torch.randn(channels, 2, dtype=torch.float64)
    x = torch.einsum("nchw,dc->ndhw", base, mix)
    x = torch.nn.functional.avg_pool2d(x, 3, 1, 1)
    return torch.relu(x + 0.3 * torch.randn_like(x))


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: ",".join(f"{k}={v}" for k, v in g.items()))
def test_conv_patches_reproduce_the_conv(geometry):
    torch.manual_seed(4)
    conv = nn.Conv2d(3, 5, **geometry).double()
    x = torch.randn(2, 3, 11, 13, dtype=torch.float64)
    y = conv(x)
    rows = conv_patches(conv, x)  # (2·L, 3·k²)
    bias = conv.bias if conv.bias is not None else torch.zeros(5, dtype=torch.float64)
    flat = rows @ conv.weight.reshape(5, -1).T + bias
    torch.testing.assert_close(flat, y.flatten(2).transpose(1, 2).reshape(-1, 5))


def test_moments_match_a_direct_computation():
    conv = nn.Conv2d(3, 4, 3, padding=1).double()
    model = nn.Sequential(nn.Identity(), conv)
    x = correlated_inputs(6, 3)
    moments = collect_moments(model, {"1": conv}, x.numpy(), batch_size=4)
    rows = conv_patches(conv, x)
    assert moments["1"].count == len(rows)
    # each batch's products are float32 (collect_moments), summed in float64
    torch.testing.assert_close(moments["1"].mean, rows.mean(0), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(moments["1"].cov, torch.cov(rows.T, correction=0), rtol=1e-5,
                               atol=1e-6)


def test_moments_of_inputs_far_from_zero_lose_nothing_to_cancellation():
    """Patches with mean 1,000 and unit spread: E[xxᵀ] − mean·meanᵀ in float32 would keep no
    digit of the covariance; the shifted sums keep it to float32's precision."""
    conv = nn.Conv2d(3, 4, 3)  # no padding: no zeros among the patches
    model = nn.Sequential(nn.Identity(), conv)
    x = (correlated_inputs(12, 3) + 1000.0).float()
    moments = collect_moments(model, {"1": conv}, x.numpy(), batch_size=4)["1"]
    rows = conv_patches(conv, x.double())
    torch.testing.assert_close(moments.mean, rows.mean(0), rtol=1e-6, atol=1e-6)
    cov = torch.cov(rows.T, correction=0)
    assert float((moments.cov - cov).abs().max() / cov.abs().max()) < 1e-4


def test_wide_convs_sample_fewer_patch_rows(monkeypatch):
    import edgekit.passes.dwsep_factor as factor

    conv = nn.Conv2d(3, 4, 3, padding=1).double()  # 27 features
    model = nn.Sequential(nn.Identity(), conv)
    x = correlated_inputs(64, 3)
    monkeypatch.setattr(factor, "MOMENT_MACS_PER_BATCH", 27**2 * 50)  # 50 rows a batch
    sampled = collect_moments(model, {"1": conv}, x.numpy(), batch_size=16)["1"]
    assert sampled.count == 50 * 4
    rows = conv_patches(conv, x)
    assert len(rows) > 10 * sampled.count
    spread = rows.std(0)
    assert ((sampled.mean - rows.mean(0)).abs() < 0.5 * spread).all()


@pytest.mark.parametrize("rank", [1, 2])
def test_refinement_lowers_the_output_error(rank):
    torch.manual_seed(6)
    conv = nn.Conv2d(8, 16, 3, padding=1).double()
    model = nn.Sequential(conv)
    x = correlated_inputs(16, 8)
    moments = collect_moments(model, {"0": conv}, x.numpy())["0"]
    plain, plain_info = DepthwiseSeparable.from_conv(conv, rank, moments=None)
    _, p_only = DepthwiseSeparable.from_conv(conv, rank, moments=moments, iterations=0)
    refined, info = DepthwiseSeparable.from_conv(conv, rank, moments=moments, iterations=10)
    assert info["init"].startswith("svd+data")
    assert info["init_error"] >= plain_info["init_error"] - 1e-9  # SVD is best in weight space
    with torch.no_grad():  # the reported output error is the measured one
        measured = float((refined(x) - conv(x)).norm() / conv(x).norm())
        measured_svd = float((plain(x) - conv(x)).norm() / conv(x).norm())
    assert measured == pytest.approx(info["output_error"], rel=1e-6)
    assert info["output_error"] <= p_only["output_error"] + 1e-12  # ALS never goes up
    assert measured < 0.8 * measured_svd


def test_refinement_keeps_full_rank_exact():
    torch.manual_seed(7)
    conv = nn.Conv2d(4, 6, 3, padding=1).double()
    x = correlated_inputs(4, 4, side=8)
    moments = collect_moments(nn.Sequential(conv), {"0": conv}, x.numpy())["0"]
    module, info = DepthwiseSeparable.from_conv(conv, max_rank(conv), moments=moments)
    assert info["output_error"] < 1e-6
    with torch.no_grad():
        torch.testing.assert_close(module(x), conv(x), rtol=1e-6, atol=1e-6)


def test_batchnorm_starts_as_identity_on_the_data():
    """bn=True without an activation keeps the exact init: the BatchNorm's statistics come from
    the data and its affine parameters undo them, in eval and in train mode."""
    torch.manual_seed(8)
    conv = nn.Conv2d(4, 6, 3, padding=1).double()
    x = correlated_inputs(8, 4, side=8)
    moments = collect_moments(nn.Sequential(conv), {"0": conv}, x.numpy())["0"]
    module, _ = DepthwiseSeparable.from_conv(conv, max_rank(conv), bn=True, moments=moments)
    with torch.no_grad():
        torch.testing.assert_close(module.eval()(x), conv(x), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(module.train()(x), conv(x), rtol=1e-4, atol=1e-4)


def test_refinement_with_degenerate_moments_stays_finite():
    conv = nn.Conv2d(4, 8, 3)
    zero = PatchMoments(torch.zeros(36, dtype=torch.float64),
                        torch.zeros(36, 36, dtype=torch.float64), 10)
    module, info = DepthwiseSeparable.from_conv(conv, 1, moments=zero)
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_pass_refines_on_training_images_and_falls_back_without(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    images = (rng.random((64, 28, 28)) ** 3 * 255).astype(np.uint8)
    np.savez(tmp_path / "train.npz", x=images, y=np.arange(64) % 10)
    torch.manual_seed(0)
    model = LeNet5().eval()
    _, rows = run_pass(model, train_source=str(tmp_path / "train.npz"), init_images=32, rank=1)
    refined = next(r for r in rows if r.get("layer") == "conv2")
    assert refined["init"].startswith("svd+data") and refined["output_error"] < 1
    torch.manual_seed(0)
    _, rows = run_pass(LeNet5().eval())
    plain = next(r for r in rows if r.get("layer") == "conv2")
    assert plain["init"] == "svd" and plain["output_error"] is None
    assert plain["init_error"] <= refined["init_error"]
    _, rows = run_pass(LeNet5().eval(), train_source=str(tmp_path / "train.npz"), bn=True,
                       rank=1)
    assert next(r for r in rows if r.get("layer") == "conv2")["init"] == "svd"  # relu between


def _train_npz(tmp_path, n: int = 64):
    import numpy as np

    rng = np.random.default_rng(0)
    images = (rng.random((n, 28, 28)) ** 3 * 255).astype(np.uint8)
    np.savez(tmp_path / "train.npz", x=images, y=np.arange(n) % 10)
    return str(tmp_path / "train.npz")


def test_rank_error_falls_with_rank_and_is_the_svd_tail_without_data():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 12, 3).double()
    x = torch.randn(8, 4, 12, 12, dtype=torch.float64)
    moments = collect_moments(conv, {"c": conv}, x.numpy())["c"]
    weight, bias = conv.weight.detach(), conv.bias.detach()
    errors = [rank_error(weight, bias, r, moments) for r in range(1, max_rank(conv) + 1)]
    assert all(errors[i + 1] <= errors[i] + 1e-9 for i in range(len(errors) - 1))
    assert errors[0] > 0.1 and errors[-1] < 1e-9
    assert rank_error(weight, bias, 2, None) == pytest.approx(factorize(weight, 2)[2])
    # without refinement the output error of the plain SVD init is larger, never smaller
    assert rank_error(weight, bias, 2, moments, refine_init=False) >= errors[1] - 1e-12


def test_auto_rank_picks_the_smallest_rank_within_max_error(tmp_path):
    train = _train_npz(tmp_path)
    torch.manual_seed(0)
    bundle, rows = run_pass(LeNet5().eval(), train_source=train, init_images=32, rank="auto",
                            max_error=0.3)
    (record,) = bundle.surgery
    rank = record["rank"]
    note = next(r["note"] for r in rows if r.get("layer") == "conv2" and "note" in r)
    errors = [float(part.split()[-1]) for part in note.split("(")[1].split(";")[0].split(", ")]
    assert note.startswith(f"rank auto: r={rank} (output error") and len(errors) == rank
    assert errors[-1] <= 0.3 and all(e > 0.3 for e in errors[:-1])
    replaced = next(r for r in rows if r.get("r") is not None)
    assert replaced["r"] == rank and replaced["output_error"] <= 0.3
    # the same images and a tighter bound need at least as high a rank
    torch.manual_seed(0)
    tighter, _ = run_pass(LeNet5().eval(), train_source=train, init_images=32, rank="auto",
                          max_error=0.05)
    assert not tighter.surgery or tighter.surgery[0]["rank"] >= rank


def test_auto_rank_uses_the_weight_error_where_moments_would_be_too_large(tmp_path,
                                                                          monkeypatch):
    import edgekit.passes.dwsep as dwsep

    monkeypatch.setattr(dwsep, "MAX_REFINE_FEATURES", 10)  # lenet5's conv2 has 16·25 = 400
    torch.manual_seed(0)
    model = LeNet5().eval()
    expected = factorize(model.conv2.weight.detach().double(), 1)[2]
    bundle, rows = run_pass(model, train_source=_train_npz(tmp_path), init_images=32,
                            rank="auto", max_error=0.999)
    note = next(r["note"] for r in rows if r.get("layer") == "conv2" and "note" in r)
    assert note.startswith(f"rank auto: r=1 (weight error r=1 {expected:.3f};")
    assert bundle.surgery[0]["rank"] == 1


def test_auto_rank_keeps_a_layer_no_saving_rank_fits(tmp_path):
    torch.manual_seed(0)
    model = LeNet5().eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    bundle, rows = run_pass(model, train_source=_train_npz(tmp_path), init_images=32,
                            rank="auto", max_error=1e-6)
    assert bundle.surgery == []
    assert all(torch.equal(state[k], v) for k, v in bundle.model.state_dict().items())
    kept = next(r for r in rows if r.get("layer") == "conv2")
    assert kept["note"].startswith("kept: no rank that saves MACs") and "r=1 " in kept["note"]
    assert rows[-1]["replaced"] == 0


def test_unset_rank_is_auto_with_training_images_and_1_without(tmp_path):
    train = _train_npz(tmp_path)
    for source, rank in ((train, "auto"), (None, 1)):
        step = get_pass("dwsep")({})
        step.check(ModelBundle(LeNet5(), GREY, "edgekit.zoo:lenet5"),
                   PassContext(out_dir="unused", data=DataSources(train=source)))
        assert step.config.rank == rank


def test_auto_rank_without_training_data_is_an_input_error():
    bundle = ModelBundle(LeNet5(), GREY, "edgekit.zoo:lenet5")
    with pytest.raises(ConfigError, match="no --train") as info:
        get_pass("dwsep")({"rank": "auto"}).check(bundle, PassContext(out_dir="unused"))
    assert info.value.exit_code == 2


# ---------------------------------------------------------------- selection and report
def test_lenet5_replaces_conv2_and_says_why_conv1_stays():
    model = LeNet5().eval()
    before = model_cost(model, GREY)
    bundle, rows = run_pass(model)
    assert isinstance(bundle.model.conv2, DepthwiseSeparable)
    assert isinstance(bundle.model.conv1, nn.Conv2d)
    kept = [r for r in rows if r.get("layer") == "conv1"]
    assert kept and "one input channel" in kept[0]["note"]
    layer = next(r for r in rows if r.get("layer") == "conv2")
    # conv2: 16→32 5×5 on 8×8 outputs: 64·32·16·25 MACs → 64·16·(25 + 32) at r=1
    assert layer["macs_before"] == 819_200 and layer["macs_after"] == 58_368
    assert layer["params_before"] == 12_832 and layer["params_after"] == 16 * 25 + 32 * 16 + 32
    assert 0 < layer["init_error"] < 1
    summary = rows[-1]
    after = model_cost(bundle.model, GREY)
    assert summary["macs"] == after["macs"] == before["macs"] - 819_200 + 58_368
    assert summary["replaced"] == 1
    assert bundle.surgery == [{**bundle.surgery[0], "op": "dwsep", "layer": "conv2", "rank": 1}]


def test_cnn_gru_replaces_the_convs_after_the_first():
    bundle, _ = run_pass(CNNGRU().eval(), arch="edgekit.zoo:cnn_gru")
    assert isinstance(bundle.model.features[4], DepthwiseSeparable)
    assert isinstance(bundle.model.features[0], nn.Conv2d)
    assert bundle.model.features[4].pointwise.bias is None  # bias=False carries over


def test_resnet18_r1_cuts_conv_macs_at_least_5x():
    torchvision = pytest.importorskip("torchvision")
    spec = InputSpec(shape=(1, 3, 224, 224))
    model = torchvision.models.resnet18().eval()
    before = model_cost(model, spec)["conv_macs"]
    bundle, rows = run_pass(model, spec, "torchvision.models:resnet18", include=["layer*"])
    replaced = [n for n, m in bundle.model.named_modules() if isinstance(m, DepthwiseSeparable)]
    assert len(replaced) == 16  # every 3×3 conv of the four stages
    assert before / model_cost(bundle.model, spec)["conv_macs"] >= 5.0


def test_include_exclude_patterns_and_containers():
    model = CNNGRU()
    plans = plan_layers(model, GREY, DwsepConfig(include=["features"]))
    assert [p.name for p in plans] == ["features.0", "features.4"]
    plans = plan_layers(model, GREY, DwsepConfig(exclude=["features.4"]))
    assert all(not p.replace for p in plans)
    plans = plan_layers(LeNet5(), GREY, DwsepConfig(include=["conv?"], exclude=["*1"]))
    assert [(p.name, p.replace) for p in plans] == [("conv2", True)]


def test_min_macs_saving_threshold():
    # LeNet conv2 at r=1 saves 1 − 58,368/819,200 ≈ 93% of its MACs
    assert plan_layers(LeNet5(), GREY, DwsepConfig(min_macs_saving=0.9))[1].replace
    plan = plan_layers(LeNet5(), GREY, DwsepConfig(min_macs_saving=0.95))[1]
    assert not plan.replace and "MACs would not drop" in plan.reason


def test_full_rank_saves_no_macs_so_nothing_is_replaced():
    plans = plan_layers(LeNet5(), GREY, DwsepConfig(rank="full"))
    assert not any(p.replace for p in plans)


def test_model_without_candidates_is_left_unchanged():
    model = RowRNN()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    bundle, rows = run_pass(model, arch="edgekit.zoo:rowrnn")
    assert bundle.surgery == []
    assert all(torch.equal(state[k], v) for k, v in bundle.model.state_dict().items())
    assert "nothing changed" in rows[-1]["note"] and rows[-1]["replaced"] == 0


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("config, message", [
    ({"include": ["conv9"]}, "matches no conv layer"),
    ({"exclude": ["conv*x"]}, "matches no conv layer"),
    ({"include": ["fc1"]}, "names a Linear, not a Conv2d"),
    ({"rank": 26}, "larger than possible for conv2"),
])
def test_bad_config_is_an_input_error(config, message):
    with pytest.raises(ConfigError, match=message) as info:
        run_pass(LeNet5(), **config)
    assert info.value.exit_code == 2


@pytest.mark.parametrize("config", [{"rank": 0}, {"rank": "half"}, {"min_macs_saving": 1.5},
                                    {"ranks": 2}, {"activation": "gelu"},
                                    {"rank": "auto", "max_error": 0}])
def test_invalid_config_values(config):
    with pytest.raises(ConfigError) as info:
        get_pass("dwsep")(config)
    assert info.value.exit_code == 2


def test_rank_too_large_for_a_single_conv():
    with pytest.raises(ConfigError, match="1..min"):
        DepthwiseSeparable.from_conv(nn.Conv2d(4, 3, 3), 4)  # min(out=3, k²=9) = 3


# ---------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("options", [{}, {"bn": True}, {"rank": 3}], ids=str)
def test_checkpoint_round_trip_is_weights_only_safe(tmp_path, options):
    torch.manual_seed(0)
    bundle, _ = run_pass(LeNet5().eval(), arch="edgekit.zoo:lenet5", **options)
    path = save_checkpoint(bundle, tmp_path / "model.pt")
    payload = torch.load(path, weights_only=True)  # raises if anything needs unpickling
    assert payload["surgery"][0]["op"] == "dwsep"
    loaded = load_model(path)
    assert isinstance(loaded.model.conv2, DepthwiseSeparable)
    assert loaded.surgery == bundle.surgery
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), bundle.model.eval()(x))


def test_surgery_records_sizes_so_a_pruned_layer_reloads(tmp_path):
    """A conv whose channels were changed before dwsep (as pruning does) reloads: the record
    holds the sizes, fit_to_state_dict resizes the rest."""
    model = LeNet5().eval()
    model.conv1 = nn.Conv2d(1, 10, 5)
    model.conv2 = nn.Conv2d(10, 32, 5)
    bundle, _ = run_pass(model)
    loaded = load_model(save_checkpoint(bundle, tmp_path / "pruned.pt"))
    assert loaded.model.conv2.in_channels == 10
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), bundle.model(x))


def test_surgery_naming_a_missing_layer_is_a_load_error(tmp_path):
    bundle, _ = run_pass(LeNet5().eval())
    bundle.surgery[0]["layer"] = "conv7"
    path = save_checkpoint(bundle, tmp_path / "bad.pt")
    with pytest.raises(ModelLoadError, match="conv7"):
        load_model(path)
    with pytest.raises(ModelLoadError, match="malformed"):
        replay_dwsep(LeNet5(), {"op": "dwsep", "layer": "conv2", "rank": "x"})
    with pytest.raises(ModelLoadError, match="is a Linear"):
        replay_dwsep(LeNet5(), {**bundle.surgery[0], "layer": "fc1"})


def test_unknown_surgery_is_a_load_error(tmp_path):
    bundle = ModelBundle(LeNet5().eval(), GREY, "edgekit.zoo:lenet5",
                         surgery=[{"op": "teleport"}])
    path = save_checkpoint(bundle, tmp_path / "odd.pt")
    with pytest.raises(ModelLoadError, match="teleport"):
        load_model(path)
