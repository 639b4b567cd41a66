"""How each runtime's layer names join back to ONNX nodes and PyTorch modules, and how the
precision that ran is read from ONNX Runtime's and OpenVINO's profiles (issue 15, part 3)."""

from __future__ import annotations

import numpy as np


def test_runtime_layer_names_join_to_onnx_nodes():
    """The name forms each runtime gives a layer, joined back to the ONNX node (and module)."""
    from onnx import TensorProto, helper, numpy_helper

    from edgekit.runtimes.profile import OnnxGraph, openvino_precision, ort_precision

    w = numpy_helper.from_array(np.ones((4, 1, 3, 3), np.float32), "conv1.weight")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "conv1.weight"], ["conv"], name="node_conv2d"),
         helper.make_node("Relu", ["conv"], ["relu"], name="node_relu")], "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("relu", TensorProto.FLOAT, [1, 4, 6, 6])], [w])
    g = OnnxGraph(helper.make_model(graph))
    forms = {"node_conv2d": None, "fused node_conv2d": "FusedConv",
             "node_conv2d_token_3": "QLinearConv", "relu_nchwc": "Conv",  # named after the Relu
             "node_conv2d/WithoutBiases": "Convolution", "node_conv2d + node_relu": None}
    for name, op in forms.items():
        (row,) = g.join([{"layer": name, "op": op}])
        assert (row["onnx_node"], row["module"]) == ("node_conv2d", "conv1"), name
    (row,) = g.join([{"layer": "ReorderOutput", "op": "ReorderOutput"}])
    assert row["onnx_node"] is None and row["module"] is None
    assert ort_precision("QLinearConv", ["uint8", "float"]) == "int8"
    assert ort_precision("Conv", ["float"]) == "fp32"
    assert ort_precision("ConvInteger", ["uint8"]) == "int8"
    assert openvino_precision("brgconv_avx512_amx_I8") == "int8"
    assert openvino_precision("jit_avx2_FP32") == "fp32"
    assert openvino_precision("brgconv_avx512_bf16") == "bf16"
    assert openvino_precision("undef") is None
