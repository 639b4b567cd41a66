"""ONNX export: every zoo model and the torchvision stand-ins, parity, manifest, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgekit.errors import ExportError, InputError
from edgekit.io.onnxfile import load_onnx, spec_from_onnx
from edgekit.pipeline import export_artifact
from edgekit.targets.onnx import OnnxTarget


@pytest.mark.parametrize("name", ["lenet5", "rowrnn", "cnn_gru", "cnn_lstm"])
def test_zoo_models_export_with_dynamic_batch(tmp_path: Path, name: str) -> None:
    from edgekit.zoo import build

    bundle = build(name)
    x = np.random.default_rng(0).standard_normal((16, 1, 28, 28), dtype=np.float32)
    artifact = OnnxTarget().export(bundle, tmp_path, parity_data=x)
    model = onnx.load(str(artifact.path))
    onnx.checker.check_model(model, full_check=True)
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_param, "batch axis must be dynamic"
    parity = artifact.metrics["parity"]
    assert parity["max_abs_diff"] < 1e-4 and parity["top1_agreement"] == 1.0
    assert spec_from_onnx(artifact.path) == bundle.spec
    if name != "lenet5":
        assert {"LSTM", "GRU"} & {n.op_type for n in model.graph.node}, "RNNs export as ONNX RNN ops"
    from edgekit.targets.onnx import ort_logits

    assert ort_logits(artifact.path, x[:3]).shape == (3, 10)  # a batch other than the export's


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0"])
def test_torchvision_models_export(tmp_path: Path, arch: str) -> None:
    import torch
    import torchvision

    sd = tmp_path / f"{arch}.pt"
    torch.save(getattr(torchvision.models, arch)(num_classes=10).state_dict(), sd)
    x = np.random.default_rng(0).standard_normal((4, 3, 96, 96), dtype=np.float32)
    artifact, record = export_artifact(
        sd, "onnx", tmp_path / "out", model_options={
            "arch": f"torchvision.models:{arch}", "arch_kwargs": {"num_classes": 10},
            "input_shape": (1, 3, 96, 96), "preprocessing": {"preset": "imagenet"}},
        parity_data=x)
    assert artifact.metrics["parity"]["top1_agreement"] == 1.0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    stage = manifest["stages"][-1]
    assert stage["stage"] == "export-onnx-fp32"
    assert stage["inputs"]["source"]["sha256"]
    assert stage["outputs"][0]["path"] == "model.onnx" and stage["outputs"][0]["sha256"]
    assert stage["metrics"]["parity"]["samples"] == 4
    assert "onnxruntime" in stage["versions"]


def test_parity_failure_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    import edgekit.targets.onnx as onnx_target
    from edgekit.zoo import build

    monkeypatch.setattr(onnx_target, "ort_logits", lambda path, x, batch=64: np.zeros((len(x), 10)))
    with pytest.raises(ExportError, match="parity"):
        OnnxTarget().export(build("lenet5"), tmp_path, parity_data=None)
    assert list(tmp_path.iterdir()) == []


def test_fp16_export(tmp_path: Path) -> None:
    from edgekit.zoo import build

    artifact = OnnxTarget().export(build("lenet5"), tmp_path, precision="fp16")
    assert artifact.path.name == "model.fp16.onnx"
    model = onnx.load(str(artifact.path))
    assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in model.graph.initializer)


def test_unknown_target_and_precision(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="onnx, openvino, tensorrt"):
        export_artifact(tmp_path, "coreml", tmp_path)
    with pytest.raises(InputError, match="fp32, fp16"):
        export_artifact(tmp_path, "onnx", tmp_path, precision="int4")


def test_external_data_outside_folder_is_refused(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    tensor = helper.make_tensor("w", TensorProto.FLOAT, [1], [1.0])
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "../../etc/passwd"
    tensor.ClearField("float_data")
    graph = helper.make_graph([helper.make_node("Identity", ["w"], ["y"])], "g", [],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], [tensor])
    path = tmp_path / "evil.onnx"
    path.write_bytes(helper.make_model(graph).SerializeToString())
    with pytest.raises(InputError, match="outside"):
        load_onnx(path)
