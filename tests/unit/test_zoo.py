"""The reference models, their training recipe and `edgekit zoo`."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the zoo needs torch (pip install edgekit[torch])")

from edgekit.data import RawImages, load_dataset, load_raw  # noqa: E402
from edgekit.errors import DataError, InputError  # noqa: E402
from edgekit.metrics import torch_top1  # noqa: E402
from edgekit.zoo import ZOO, build, default_spec, get_entry  # noqa: E402
from edgekit.zoo.models import rows_as_sequence  # noqa: E402
from edgekit.zoo.train import (  # noqa: E402
    FitOptions,
    TrainConfig,
    augment,
    black_value,
    cosine_warmup_schedule,
    fit,
)
from tests.helpers import cli  # noqa: E402


@pytest.fixture(scope="module")
def fashion_subsets():
    """2,000 stratified training images (raw) and 2,000 test images (model-ready)."""
    try:
        raw = load_raw("fashion-mnist:train")
        test = load_dataset("fashion-mnist:test", default_spec("lenet5"), limit=2000)
    except DataError as exc:
        pytest.skip(f"Fashion-MNIST is not installed: {exc.message}")
    return raw, test


@pytest.fixture(scope="module")
def trained_lenet5(fashion_subsets):
    raw, test = fashion_subsets
    torch.manual_seed(0)
    bundle = build("lenet5")
    cfg = TrainConfig(epochs=1, limit=2000, batch_size=16, num_threads=1, seed=0)
    history = fit(bundle.model, raw, bundle.spec, test, cfg, description="test lenet5")
    return bundle, history, test


# ---------------------------------------------------------------- models
@pytest.mark.parametrize("name", list(ZOO))
def test_every_model_maps_a_batch_to_logits(name):
    torch.manual_seed(0)
    model = build(name).model.eval()
    assert model(torch.randn(4, 1, 28, 28)).shape == (4, 10)
    assert build(name, num_classes=7).model(torch.randn(2, 1, 28, 28)).shape == (2, 7)


def test_lenet5_is_the_articles_simple_cnn():
    model = build("lenet5").model
    assert tuple(model.conv1.weight.shape) == (16, 1, 5, 5)
    assert tuple(model.conv2.weight.shape) == (32, 16, 5, 5)
    assert (model.fc1.in_features, model.fc1.out_features) == (512, 120)
    assert (model.fc2.in_features, model.fc2.out_features) == (120, 84)
    assert (model.fc3.in_features, model.fc3.out_features) == (84, 10)
    assert model.conv1.padding == (0, 0) and model.conv2.padding == (0, 0)
    sizes = {}
    for layer in ("conv1", "conv2"):
        getattr(model, layer).register_forward_hook(
            lambda m, i, o, layer=layer: sizes.__setitem__(layer, tuple(o.shape[1:])))
    model(torch.zeros(1, 1, 28, 28))
    assert sizes == {"conv1": (16, 24, 24), "conv2": (32, 8, 8)}  # pools: 24→12, 8→4


def test_hybrids_read_feature_map_rows_channel_major():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    seq = rows_as_sequence(x)
    assert seq.shape == (2, 4, 15)
    # step h, columns c*W:(c+1)*W hold channel c's row h: what pruning relies on
    assert torch.equal(seq[1, 2, 5:10], x[1, 1, 2])
    for name in ("cnn_gru", "cnn_lstm"):
        model = build(name).model
        assert model.rnn.input_size == model.features[4].out_channels * 7
        assert model.rnn.batch_first


def test_unknown_model_is_an_input_error_listing_names():
    with pytest.raises(InputError) as info:
        get_entry("resnet9000")
    assert "lenet5" in info.value.hint and "cnn_gru" in info.value.hint


def test_registry_defaults_fit_the_issue():
    import json

    from tests.conftest import ROOT

    for entry in ZOO.values():
        assert 1 <= entry.epochs <= 3
        config = TrainConfig(**entry.train)  # every override is a valid config key
        assert all(getattr(config, k) == v for k, v in entry.train.items())
    # every target the registry sets is met by the checkpoint the zoo benchmark recorded, with
    # the registry's own epochs (benchmarks/results/zoo.json, written by benchmarks/bench_zoo.py)
    recorded = {m["model"]: m for m in json.loads(
        (ROOT / "benchmarks" / "results" / "zoo.json").read_text())["models"]}
    for name in ("lenet5", "rowrnn", "cnn_gru", "cnn_lstm"):
        assert recorded[name]["target_top1"] == ZOO[name].target_top1
        assert recorded[name]["epochs"] == ZOO[name].epochs
        assert recorded[name]["test_top1"] >= ZOO[name].target_top1
    spec = default_spec("rowrnn")
    assert spec.shape == (1, 1, 28, 28) and spec.num_classes == 10


# ---------------------------------------------------------------- recipe pieces
def test_cosine_schedule_warms_up_linearly_then_decays_to_zero():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    scheduler = cosine_warmup_schedule(optimizer, total_steps=100, warmup_steps=10)
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[:10] == pytest.approx([(i + 1) / 10 for i in range(10)])
    decay = lrs[10:]
    assert decay[0] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(decay[:-1], decay[1:], strict=True))
    assert decay[45] == pytest.approx(0.5, abs=0.03)  # half way down the cosine
    assert decay[-1] < 1e-2


def test_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match="extra"):
        TrainConfig(epoch=3)


def test_augment_keeps_shape_changes_images_and_pads_with_black():
    spec = default_spec("lenet5")
    images = np.full((64, 28, 28), 200, np.uint8)
    x = torch.from_numpy(spec.preprocess(images))
    cfg = TrainConfig(crop_padding=3, hflip=True)
    out = augment(x, cfg, torch.Generator().manual_seed(0), black_value(spec))
    assert out.shape == x.shape
    black = float(black_value(spec)[0])
    padded_pixels = torch.isclose(out, torch.tensor(black))
    assert padded_pixels.any(), "shifted crops show the padding"
    assert torch.isclose(out[~padded_pixels], x[0, 0, 0, 0]).all()
    again = augment(x, cfg, torch.Generator().manual_seed(0), black_value(spec))
    assert torch.equal(out, again), "same seed, same augmentation"
    identity = augment(x, TrainConfig(crop_padding=0, hflip=False), torch.Generator())
    assert torch.equal(identity, x)


def test_augment_flips_horizontally():
    x = torch.arange(28, dtype=torch.float32).expand(32, 1, 28, 28).contiguous()
    out = augment(x, TrainConfig(crop_padding=0, hflip=True), torch.Generator().manual_seed(1))
    flipped = torch.equal(out[:, 0, 0, 0], torch.full((32,), 27.0))
    kept = out[:, 0, 0, 0] == 0
    assert 0 < int(kept.sum()) < 32 and not flipped
    assert all(torch.equal(o, x[0]) or torch.equal(o, x[0].flip(2)) for o in out)


# ---------------------------------------------------------------- training
def test_fit_learns_on_a_small_subset(trained_lenet5):
    bundle, history, test = trained_lenet5
    assert history["train_images"] == 2000
    assert len(history["epochs"]) == 1
    record = history["epochs"][0]
    assert record["top1"] > 0.6 and record["loss"] < 2.3
    assert torch_top1(bundle.model, test) == pytest.approx(history["epochs"][-1]["top1"])
    assert not bundle.model.training


def test_fit_is_deterministic_and_takes_a_custom_loss(fashion_subsets):
    raw, test = fashion_subsets
    small = RawImages(raw.images[:256], raw.labels[:256], raw.source)
    calls = []

    def loss_fn(model, x, y):
        calls.append(len(x))
        return torch.nn.functional.cross_entropy(model(x), y)

    cfg = TrainConfig(epochs=1, batch_size=64, num_threads=1, seed=3)
    weights = []
    for _ in range(2):
        torch.manual_seed(3)
        model = build("cnn_gru").model
        fit(model, small, default_spec("cnn_gru"), None, cfg, options=FitOptions(loss_fn=loss_fn))
        weights.append(model.classifier.weight.detach().clone())
    assert calls == [64] * 8
    assert torch.equal(weights[0], weights[1])


def test_checkpoint_round_trip_gives_identical_logits(trained_lenet5, tmp_path):
    from edgekit.io.models import load_model, save_checkpoint

    bundle, history, test = trained_lenet5
    path = save_checkpoint(bundle, tmp_path / "lenet5.pt", history=history)
    loaded = load_model(path)
    assert loaded.arch == "edgekit.zoo:lenet5"
    assert loaded.spec == bundle.spec
    x = torch.from_numpy(test.x[:16])
    with torch.no_grad():
        assert torch.equal(loaded.model(x), bundle.model(x))


# ---------------------------------------------------------------- CLI
def test_cli_unknown_model_exits_2(tmp_path, capsys):
    code, _, err = cli(capsys, "zoo", "train", "nope", "-o", str(tmp_path / "m.pt"))
    assert code == 2 and "unknown zoo model" in err and "lenet5" in err
    assert not (tmp_path / "m.pt").exists()


def test_cli_output_must_be_a_file(tmp_path, capsys):
    code, _, err = cli(capsys, "zoo", "train", "lenet5", "-o", str(tmp_path))
    assert code == 2 and "directory" in err


def test_cli_list_json(capsys):
    from edgekit.cli import main

    main(["zoo", "list", "--json"])
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list(ZOO)


def test_cli_train_writes_a_loadable_checkpoint(fashion_subsets, tmp_path, capsys):
    from edgekit.cli import main
    from edgekit.io.models import load_model

    out = tmp_path / "rowrnn.pt"
    main(["zoo", "train", "rowrnn", "--epochs", "1", "--limit", "500", "--eval-limit", "500",
          "--threads", "1", "-o", str(out), "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["name"] == "rowrnn" and summary["test_images"] == 500
    bundle = load_model(out)
    assert bundle.meta["test_top1"] == summary["test_top1"]
    # The reported top-1 is the saved model's on the same 500 test images, and above chance (0.1).
    test = load_dataset("fashion-mnist:test", bundle.spec, limit=500, seed=0)
    assert torch_top1(bundle.model, test) == summary["test_top1"]
    assert summary["test_top1"] > 0.2
    assert bundle.meta["train_config"]["limit"] == 500
    assert [p.name for p in tmp_path.iterdir()] == ["rowrnn.pt"], "no temp file left behind"
