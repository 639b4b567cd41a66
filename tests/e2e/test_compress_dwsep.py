"""`edgekit compress --dwsep` end to end on small data: substitution, distillation, checkpoint,
ONNX export (the depthwise conv as a grouped Conv), the report, and the bad-input exits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from tests.helpers import cli, fashion_train_subset  # noqa: E402

TRAIN_IMAGES = 1000
EVAL_LIMIT = 500


@pytest.fixture(scope="module")
def small_train(tmp_path_factory) -> Path:
    """1,000 stratified Fashion-MNIST training images as an .npz source (fast distillation)."""
    return fashion_train_subset(tmp_path_factory.mktemp("data"), TRAIN_IMAGES)


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    """untrained(name) -> an edgekit checkpoint of a randomly initialised zoo model."""
    from edgekit.io.models import save_checkpoint
    from edgekit.zoo import build

    folder = tmp_path_factory.mktemp("models")

    def make(name: str) -> Path:
        torch.manual_seed(0)
        return save_checkpoint(build(name), folder / f"{name}.pt")

    return make


def test_dwsep_then_distill_from_one_command(zoo_checkpoint, small_train, tmp_path, capsys):
    import onnx

    from edgekit.io.models import load_model
    from edgekit.passes.dwsep import DepthwiseSeparable

    ckpt = zoo_checkpoint("lenet5")
    out = tmp_path / "out"
    code, stdout, err = cli(capsys, "compress", ckpt, "--dwsep", "--train", small_train,
                                 "--eval", "fashion-mnist:test", "--eval-limit", EVAL_LIMIT,
                                 "--distill-epochs", 1, "--max-drop", 100, "-o", out, "--json")
    assert code == 0, err
    report = json.loads(stdout)
    assert report["steps"] == ["dwsep", "distill"]
    rows = report["rows"]
    original = rows[0]
    layer = next(r for r in rows if r.get("layer") == "conv2" and "r" in r)
    summary = next(r for r in rows if r["step"] == "dwsep" and "replaced" in r)
    distilled = next(r for r in rows if r["step"] == "distill")
    assert any(r.get("layer") == "conv1" and "one input channel" in r["note"] for r in rows)
    # the default rank with training images is auto: the smallest rank within max_error 0.10
    # (refined on the training images: a small output error, at the price of a larger weight
    # error), and it still saves MACs
    choice = next(r["note"] for r in rows if r.get("note", "").startswith("rank auto"))
    assert choice.startswith(f"rank auto: r={layer['r']} (output error")
    assert layer["init"].startswith("svd+data") and 0 < layer["output_error"] <= 0.10
    assert layer["init_error"] > 0 and layer["macs_after"] * 2 < layer["macs_before"]
    assert summary["macs"] == original["macs"] - layer["macs_before"] + layer["macs_after"]
    # the data-refined init keeps most of the accuracy; distillation (on 1,000 images)
    # keeps the student near the teacher
    assert summary["top1"] > original["top1"] - 0.10
    assert distilled["top1"] > original["top1"] - 0.15

    manifest = json.loads((out / "manifest.json").read_text())
    stages = {s["stage"]: s for s in manifest["stages"]}
    assert stages["dwsep"]["config"]["rank"] == "auto"  # what ran, not "unset"
    assert any(r.get("init_error") for r in stages["dwsep"]["metrics"]["rows"])
    loaded = load_model(out / "model.pt")  # weights_only: the surgery replays on load
    assert isinstance(loaded.model.conv2, DepthwiseSeparable)
    graph = onnx.load(str(out / "model.onnx")).graph
    groups = [a.i for n in graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "group"]
    assert 16 in groups  # the depthwise conv: group = in_channels
    assert stages["export-onnx-fp32"]["metrics"]["parity"]["top1_agreement"] >= 0.99


def test_no_candidate_conv_changes_nothing_and_exits_0(untrained, small_train, tmp_path, capsys):
    from edgekit.io.models import load_model

    ckpt = untrained("rowrnn")
    out = tmp_path / "out"
    code, stdout, err = cli(capsys, "compress", ckpt, "--dwsep", "--train", small_train,
                                 "-o", out, "--json")
    assert code == 0, err
    assert "nothing changed" in err
    rows = json.loads(stdout)["rows"]
    assert any(r["step"] == "distill" and r.get("note", "").startswith("skipped") for r in rows)
    before, after = load_model(ckpt).model.state_dict(), load_model(out / "model.pt").model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("flags, message", [
    (["--dwsep-include", "conv9"], "matches no conv layer"),
    (["--dwsep-include", "fc1"], "not a Conv2d"),
    (["--dwsep-exclude", "conv3"], "matches no conv layer"),
    (["--dwsep-rank", "26"], "larger than possible"),
    (["--dwsep-rank", "half"], "not a positive integer, 'auto' or 'full'"),
])
def test_bad_dwsep_flags_exit_2_and_write_nothing(untrained, tmp_path, capsys, flags, message):
    out = tmp_path / "out"
    code, _, err = cli(capsys, "compress", untrained("lenet5"), "--dwsep", *flags,
                            "--train", "unused.npz", "-o", out)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert "hint:" in err or "Usage:" in err
    assert not out.exists()


def test_auto_rank_without_training_data_exits_2(untrained, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = cli(capsys, "compress", untrained("lenet5"), "--dwsep", "--dwsep-rank", "auto",
                            "--distill-epochs", 0, "-o", out)
    assert code == 2 and "no --train was given" in err and "hint:" in err
    assert not out.exists()


def test_prune_dwsep_and_int8_in_one_run(zoo_checkpoint, small_train, tmp_path, capsys):
    """All three compression steps from one command; the checkpoint (pruned and substituted)
    reloads, and the int8 model is there."""
    from edgekit.io.models import load_model
    from edgekit.passes.dwsep import DepthwiseSeparable

    out = tmp_path / "out"
    code, stdout, err = cli(capsys, "compress", zoo_checkpoint("lenet5"), "--prune", 0.3, "--dwsep",
                                 "--int8", "--calib", small_train, "--calib-size", 128,
                                 "--train", small_train, "--eval", "fashion-mnist:test",
                                 "--eval-limit", EVAL_LIMIT, "--distill-epochs", 1,
                                 "--max-drop", 100, "-o", out, "--json")
    assert code == 0, err
    report = json.loads(stdout)
    assert report["steps"] == ["prune", "dwsep", "distill", "quantize"]
    rows = report["rows"]
    dwsep = next(r for r in rows if r["step"] == "dwsep" and "replaced" in r)
    assert dwsep["replaced"] == 1 and dwsep["macs"] < rows[0]["macs"] / 2
    loaded = load_model(out / "model.pt")
    assert isinstance(loaded.model.conv2, DepthwiseSeparable)
    assert loaded.model.conv2.in_channels < 16  # pruned before it was substituted
    assert any(a.get("precision") == "int8" for a in report["artifacts"])
