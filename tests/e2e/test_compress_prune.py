"""`edgekit compress --prune` end to end through the CLI: prune, distill, save a checkpoint that
reloads with weights_only=True, export ONNX, report; and its bad inputs (exit 2, nothing written)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("torch_pruning")

from tests.helpers import edgekit, fashion_train_subset  # noqa: E402


@pytest.fixture(scope="module")
def small_train(tmp_path_factory) -> Path:
    """1,500 Fashion-MNIST training images (stratified) as a uint8 .npz: a small --train."""
    return fashion_train_subset(tmp_path_factory.mktemp("data"), 1500)


def test_prune_and_distill_lenet5(zoo_checkpoint, small_train, tmp_path):
    import torch

    from edgekit.io.manifest import Manifest
    from edgekit.io.models import load_model

    out = tmp_path / "out"
    proc = edgekit("compress", str(zoo_checkpoint("lenet5")), "--prune", "0.5",
                   "--train", str(small_train), "--eval", "fashion-mnist:test",
                   "--eval-limit", "500", "--distill-epochs", "1", "--max-drop", "100",
                   "-o", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["steps"] == ["prune", "distill"]
    rows = {r["step"]: r for r in report["rows"]}
    assert rows["original"]["macs"] / rows["prune"]["macs"] > 3.0
    assert rows["prune"]["skipped"] == ["fc3: final classifier (never pruned)"]
    # Pruning half the channels without training costs accuracy; distillation wins some back.
    assert 0.1 < rows["prune"]["top1"] < rows["original"]["top1"]
    assert rows["distill"]["top1"] > rows["prune"]["top1"]
    # The checkpoint reloads safely (weights_only) with the pruned architecture.
    obj = torch.load(out / "model.pt", weights_only=True)
    assert obj["meta"]["pruning"]["ratio"] == 0.5
    bundle = load_model(out / "model.pt")
    assert bundle.model.conv1.out_channels == 8 and bundle.model.fc1.in_features == 256
    manifest = Manifest(out)
    onnx_entry = manifest.find(format="onnx", precision="fp32")
    assert onnx_entry is not None and (out / onnx_entry["path"]).is_file()
    stage = manifest.stage("prune")
    assert stage["config"]["ratio"] == 0.5
    assert stage["metrics"]["rows"][0]["top1"] == rows["prune"]["top1"]
    # ONNX Runtime agrees with the reloaded torch model.
    import onnxruntime as ort

    x = np.random.default_rng(0).normal(size=(3, 1, 28, 28)).astype(np.float32)
    session = ort.InferenceSession(str(out / onnx_entry["path"]), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        want = bundle.model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_hybrid_prune_through_the_cli(tmp_path):
    """cnn_gru (untrained weights are enough: this checks structure) at --target-macs 0.4 with
    --round-to 8: convs, RNN input columns and GRU hidden units shrink; model.pt and the ONNX
    export agree."""
    import torch

    from edgekit.io.models import load_model, save_checkpoint
    from edgekit.zoo import build

    torch.manual_seed(0)
    ckpt = save_checkpoint(build("cnn_gru"), tmp_path / "cnn_gru.pt")
    out = tmp_path / "out"
    proc = edgekit("compress", str(ckpt), "--target-macs", "0.4", "--round-to", "8",
                   "--distill-epochs", "0", "-o", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["step"]: r for r in json.loads(proc.stdout)["rows"]}
    assert rows["prune"]["macs"] <= 0.4 * rows["original"]["macs"]
    model = load_model(out / "model.pt").model
    assert model.features[4].out_channels % 8 == 0 and model.rnn.hidden_size % 8 == 0
    assert model.rnn.hidden_size < 128
    assert model.rnn.input_size == model.features[4].out_channels * 7
    assert (out / "model.onnx").is_file()


@pytest.mark.parametrize(("args", "message"), [
    (["--prune", "1.5"], "ratio: Input should be less than 1 (got 1.5)"),
    (["--prune", "0"], "ratio: Input should be greater than 0 (got 0"),
    (["--target-macs", "2"], "target_macs: Input should be less than 1 (got 2"),
    (["--prune", "0.5"], "no --train"),  # distillation is implied and has no data
    (["--prune", "0.5", "--distill-epochs", "0", "--importance", "taylor"], "taylor"),
    (["--prune", "0.5", "--distill-epochs", "0", "--prune-ignore", "conv9"], "matches no layer"),
])
def test_bad_inputs_exit_2_and_write_nothing(tmp_path, args, message):
    import torch

    from edgekit.io.models import save_checkpoint
    from edgekit.zoo import build

    torch.manual_seed(0)
    ckpt = save_checkpoint(build("lenet5"), tmp_path / "lenet5.pt")
    out = tmp_path / "out"
    proc = edgekit("compress", str(ckpt), *args, "-o", str(out))
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "hint:" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (out / "model.pt").exists() and not (out / "model.onnx").exists()
