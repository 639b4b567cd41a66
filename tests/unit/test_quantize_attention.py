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

    from edgekit.quant.attention import find_attention_nodes, float_nodes, nncf_model_type
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
    ort = float_nodes(model, "auto", "onnxruntime")
    assert set(ort) == set(nodes.layernorm)
    assert set(float_nodes(model, "float", "onnxruntime")) == {*nodes.layernorm,
                                                               *nodes.score_matmuls}
    assert float_nodes(model, "auto", "openvino") == {}
    assert set(float_nodes(model, "float", "openvino")) == set(nodes.score_matmuls)
    assert float_nodes(model, "int8", "onnxruntime") == {}
    assert float_nodes(model, "auto", "tensorrt") == {}
    assert nncf_model_type(model, "auto") == "transformer"
    assert nncf_model_type(model, "int8") is None
    # the names survive ONNX Runtime's pre-processing (what the QDQ quantizer is given)
    prepared, _ = prepare(tiny_vit_onnx, tiny_vit_onnx.parent)
    assert set(float_nodes(onnx.load(str(prepared)), "auto", "onnxruntime")) == set(ort)


def test_tensorrt_flavour_quantizes_both_attention_matmuls(tiny_vit_onnx, tmp_path):
    """TensorRT's explicit quantization: Q/DQ on the inputs of every MatMul, the attention's
    activation × activation ones included (per tensor on both sides), nothing else quantized;
    the TensorRT checks accept it."""
    import onnx

    from edgekit.passes.base import PassContext
    from edgekit.passes.quantize import QuantizePass
    from edgekit.quant.attention import find_attention_nodes
    from edgekit.resources import shipped_dir
    from edgekit.targets.tensorrt import tensorrt_qdq_problems

    calib = next(shipped_dir("calibration").glob("fashion-mnist*.npz"))
    artifact = QuantizePass({"flavour": "tensorrt", "calib_size": 16}).apply(
        tiny_vit_onnx, PassContext(out_dir=tmp_path, calib_source=str(calib)))
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


@pytest.mark.parametrize("flavour", ["onnxruntime", "openvino"])
def test_int8_of_an_attention_model_keeps_the_budget(zoo_checkpoint, tmp_path, flavour):
    """conv_attn (1 epoch on 6,000 images) to int8 on each runtime, budget 1 point on 500 test
    images: projections and MLP run in int8, LayerNorm stays float on ONNX Runtime, NNCF gets the
    transformer model type, and the measured drop is within the budget."""
    if flavour == "openvino":
        pytest.importorskip("openvino")
        pytest.importorskip("nncf")
    from edgekit.api import compress
    from edgekit.io.manifest import Manifest

    out = tmp_path / "out"
    compress(zoo_checkpoint("conv_attn"), out,
             steps=[("quantize", {"flavour": flavour, "calib_size": 128})],
             eval="fashion-mnist:test", eval_limit=500, max_drop=1.0)
    stage = Manifest(out).stage("quantize")
    metrics, config = stage["metrics"], stage["config"]
    accuracy = metrics["accuracy"]
    assert accuracy["runtime"] == flavour and accuracy["samples"] == 500
    assert accuracy["fp32_top1"] > 0.7
    assert accuracy["drop_points"] <= 1.0 and metrics["budget"]["held"] is True
    int8 = {layer["name"] for layer in metrics["layers"]["int8"]}
    assert any("qkv" in name for name in int8) and any("fc1" in name for name in int8)
    assert any("fc2" in name for name in int8) and any("proj" in name for name in int8)
    if flavour == "onnxruntime":
        import onnx

        from edgekit.quant.attention import find_attention_nodes

        int8_model = onnx.load(str(out / "model.int8.onnx"))
        layernorms = find_attention_nodes(int8_model).layernorm
        assert len(layernorms) == 5 and set(layernorms) <= set(config["float_layers"])
        producers = {o: n.op_type for n in int8_model.graph.node for o in n.output}
        for node in int8_model.graph.node:  # LayerNorm reads float, not a DequantizeLinear
            if node.op_type == "LayerNormalization":
                assert producers.get(node.input[0]) != "DequantizeLinear", node.name
    else:
        assert config["quantization"]["model_type"] == "transformer"
