"""`edgekit compress` of the conv + attention hybrid end to end through the CLI: heads, MLP and
conv channels pruned, distilled, exported, int8 within the budget; the checkpoint reloads with
the pruned head counts and agrees with its ONNX export."""

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
    return fashion_train_subset(tmp_path_factory.mktemp("data"), 1500)


def test_compress_conv_attn(small_train, tmp_path):
    """The shipped conv_attn (3 epochs, top-1 0.8985) through prune → distill → int8."""
    import torch

    from edgekit.io.manifest import Manifest
    from edgekit.io.models import load_model
    from edgekit.zoo import shipped_checkpoint

    out = tmp_path / "out"
    proc = edgekit("compress", str(shipped_checkpoint("conv_attn")), "--prune", "0.5",
                   "--prune-heads", "0.3", "--train", str(small_train),
                   "--eval", "fashion-mnist:test", "--eval-limit", "500",
                   "--distill-epochs", "1", "--int8", "--calib-size", "64", "--max-drop", "10",
                   "-o", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["steps"] == ["prune", "distill", "quantize"]
    rows = {r["step"]: r for r in report["rows"]}
    assert rows["prune"]["macs"] / rows["original"]["macs"] < 0.6
    assert rows["distill"]["top1"] > rows["prune"]["top1"]
    assert rows["int8 onnxruntime"]["budget"].startswith("holds")
    # 4 heads at 0.3 is 1.2 heads: rounded to 1, and said so
    assert "not a whole number of heads" in " ".join(proc.stderr.split())
    bundle = load_model(out / "model.pt")
    for block in bundle.model.blocks:
        assert block.attn.num_heads == 3 and block.attn.qkv.out_features == 3 * 3 * 16
        assert block.mlp.fc1.out_features == 64
    assert bundle.model.features[0].out_channels == 8
    meta = torch.load(out / "model.pt", weights_only=True)["meta"]["pruning"]
    assert {p["layer"] for p in meta["pruned"] if "heads" in p["type"]} == {
        "blocks.0.attn", "blocks.1.attn"}
    manifest = Manifest(out)
    onnx_entry = manifest.find(format="onnx", precision="fp32")
    import onnxruntime as ort

    x = np.random.default_rng(0).normal(size=(3, 1, 28, 28)).astype(np.float32)
    session = ort.InferenceSession(str(out / onnx_entry["path"]),
                                   providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        want = bundle.model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)
    int8 = manifest.stage("quantize-int8")
    assert int8["metrics"]["accuracy"]["drop_points"] <= int8["metrics"]["budget"]["allowed_points"]
