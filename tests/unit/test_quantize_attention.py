"""int8 of attention models: which ONNX nodes are attention, what each runtime keeps float, and
an attention model quantized within the accuracy budget on ONNX Runtime and on OpenVINO."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def tiny_vit_onnx(tmp_path_factory) -> Path:
    """A 2-block ViT (untrained) exported by edgekit's ONNX target: the structure is the point."""
    from edgekit.io.models import ModelBundle
    from edgekit.targets.onnx import OnnxTarget
    from edgekit.zoo import default_spec
    from edgekit.zoo.attention import ViTTiny

    torch.manual_seed(0)
    model = ViTTiny(dim=32, depth=2, num_heads=4).eval()
    bundle = ModelBundle(model, default_spec("vit_tiny"), "edgekit.zoo:vit_tiny",
                         {"dim": 32, "depth": 2, "num_heads": 4})
    return OnnxTarget().export(bundle, tmp_path_factory.mktemp("vit")).path


def test_attention_nodes_are_found_in_the_exported_graph(tiny_vit_onnx):
    import onnx

    from edgekit.quant.attention import (
        ORT_ATTENTION_OPS,
        find_attention_nodes,
        float_nodes,
        nncf_model_type,
        ort_settings,
    )
    from edgekit.quant.ort_qdq import prepare

    model = onnx.load(str(tiny_vit_onnx))
    nodes = find_attention_nodes(model)
    assert nodes.found
    assert len(nodes.score_matmuls) == 4 and len(nodes.softmax) == 2  # q·kᵀ and w·v per block
    assert len(nodes.layernorm) == 5                                   # 2 per block + final
    weights = {i.name for i in model.graph.initializer}
    by_name = {n.name: n for n in model.graph.node}
    for name in nodes.score_matmuls:  # neither input is a weight
        assert not set(by_name[name].input) & weights
    assert float_nodes(model, "auto", "onnxruntime") == {}
    assert set(float_nodes(model, "float", "onnxruntime")) == set(nodes.score_matmuls)
    assert set(float_nodes(model, "float", "openvino")) == set(nodes.score_matmuls)
    assert float_nodes(model, "int8", "onnxruntime") == {}
    assert ort_settings(model, "auto") == {"op_types": ORT_ATTENTION_OPS,
                                           "float_outputs": ("MatMul", "Gemm")}
    assert not {"Add", "Mul", "LayerNormalization", "Softmax"} & set(ORT_ATTENTION_OPS)
    assert ort_settings(model, "int8") == {}
    assert nncf_model_type(model, "auto") == "transformer"
    assert nncf_model_type(model, "int8") is None
    # the names survive ONNX Runtime's pre-processing (what the QDQ quantizer is given)
    prepared, _ = prepare(tiny_vit_onnx, tiny_vit_onnx.parent)
    assert find_attention_nodes(onnx.load(str(prepared))).score_matmuls == nodes.score_matmuls


def test_tensorrt_flavour_quantizes_both_attention_matmuls(tiny_vit_onnx, tmp_path):
    """TensorRT's explicit quantization: Q/DQ on the inputs of every MatMul, the attention's
    activation × activation ones included (per tensor on both sides), nothing else quantized;
    the TensorRT checks accept it."""
    import onnx

    from edgekit.data.given import DataSources
    from edgekit.passes.base import PassContext
    from edgekit.passes.quantize import QuantizePass
    from edgekit.quant.attention import find_attention_nodes
    from edgekit.resources import shipped_dir
    from edgekit.targets.tensorrt import tensorrt_qdq_problems

    calib = next(shipped_dir("calibration").glob("fashion-mnist*.npz"))
    artifact = QuantizePass({"flavour": "tensorrt", "calib_size": 16}).apply(
        tiny_vit_onnx, PassContext(out_dir=tmp_path, data=DataSources(calib=str(calib))))
    model = onnx.load(str(artifact.path))
    assert tensorrt_qdq_problems(model, allow_float=())[0] == []
    producers = {o: n for n in model.graph.node for o in n.output}
    nodes = find_attention_nodes(model)
    for name in nodes.score_matmuls:
        node = next(n for n in model.graph.node if n.name == name)
        assert [producers[i].op_type for i in node.input] == ["DequantizeLinear"] * 2
    for node in model.graph.node:
        if node.op_type in ("LayerNormalization", "Softmax", "Erf"):
            assert producers[node.input[0]].op_type != "DequantizeLinear", node.name


def test_cnn_has_no_attention_nodes(tmp_path):
    import onnx

    from edgekit.quant.attention import find_attention_nodes, float_nodes
    from tests.unit.test_quantize import tiny_model

    model = onnx.load(str(tiny_model(tmp_path / "cnn.onnx")))
    assert not find_attention_nodes(model).found
    assert float_nodes(model, "float", "onnxruntime") == {}
    from edgekit.quant.attention import ort_settings

    assert ort_settings(model, "auto") == {}  # CNNs keep ONNX Runtime's defaults


@pytest.mark.parametrize("flavour", ["onnxruntime", "openvino"])
def test_int8_of_an_attention_model_keeps_the_budget(fashion_test_small, tmp_path, flavour):
    """The shipped conv_attn to int8 on each runtime, budget 1 point on 500 test images:
    projections and MLP run in int8, LayerNorm stays float on ONNX Runtime, NNCF gets the
    transformer model type, and the measured drop is within the budget."""
    if flavour == "openvino":
        pytest.importorskip("openvino")
        pytest.importorskip("nncf")
    from edgekit.api import compress
    from edgekit.io.manifest import Manifest
    from edgekit.metrics import TOLERANCE
    from edgekit.zoo import shipped_checkpoint

    out = tmp_path / "out"
    compress(shipped_checkpoint("conv_attn"), out,
             steps=[("quantize", {"flavour": flavour, "calib_size": 64, "max_drop": 1.0})],
             data={"eval": fashion_test_small, "eval_limit": 500}, budget={"max_drop": 1.0})
    stage = Manifest(out).stage(f"quantize-{'int8' if flavour == 'onnxruntime' else flavour}")
    metrics = stage["metrics"]
    accuracy = metrics["accuracy"]
    assert accuracy["runtime"] == flavour and accuracy["samples"] == 500
    assert accuracy["fp32_top1"] > 0.85
    # the budget's own rule: within TOLERANCE of it (5 of 500 images is 1.0000000000000009)
    assert accuracy["drop_points"] <= 1.0 + TOLERANCE and metrics["budget"]["held"] is True
    import onnx

    from edgekit.quant.attention import find_attention_nodes

    fp32 = onnx.load(str(out / "model.onnx"))
    weights = {i.name for i in fp32.graph.initializer}
    # qkv, proj, fc1, fc2 of both blocks: MatMuls with a weight (the exporter names nodes by op)
    projections = [n.name for n in fp32.graph.node
                   if n.op_type == "MatMul" and set(n.input) & weights]
    assert len(projections) == 8
    int8 = {layer["name"] for layer in metrics["layers"]["int8"]}
    assert set(projections) <= int8, metrics["layers"]
    if flavour == "onnxruntime":
        import onnx

        from edgekit.quant.attention import find_attention_nodes

        int8_model = onnx.load(str(out / "model.int8.onnx"))
        assert len(find_attention_nodes(int8_model).layernorm) == 5
        producers = {o: n.op_type for n in int8_model.graph.node for o in n.output}
        for node in int8_model.graph.node:  # the residual stream, LayerNorm, GELU stay float
            if node.op_type in ("LayerNormalization", "Add", "Erf", "Softmax"):
                assert producers.get(node.input[0]) != "DequantizeLinear", node.name
        assert "MatMul" in config_quantization(stage)["op_types"]
    else:
        assert config_quantization(stage)["model_type"] == "transformer"


def config_quantization(stage: dict) -> dict:
    """How the step quantized, as its artifact's config records it."""
    return next(o for o in stage["outputs"] if "quantization" in o)["quantization"]


def test_compress_flags_reach_the_steps():
    from click.testing import CliRunner

    from edgekit.cli.compress import compress, steps_from_flags

    ctx = compress.make_context("compress", ["m.pt", "-o", "out", "--prune", "0.5",
                                             "--prune-heads", "0.25", "--int8",
                                             "--attention", "float"])
    steps = dict(steps_from_flags(ctx.params))
    assert steps["prune"]["head_ratio"] == 0.25 and steps["quantize"]["attention"] == "float"
    result = CliRunner().invoke(compress, ["m.pt", "-o", "out", "--int8", "--attention", "fp8"])
    assert result.exit_code == 2 and "fp8" in result.output
