"""int8 for attention models: which ONNX nodes are attention, and what each runtime keeps float.

What an exported attention block looks like (torch.onnx dynamo exporter, opset 18, edgekit's zoo
and timm's layout): MatMul/Gemm with weight initializers for the projections (qkv, proj) and the
MLP (fc1, fc2); two MatMuls whose inputs are both activations (q·kᵀ and weights·v) around a
Softmax; LayerNormalization; GELU as Div → Erf → Add → Mul → Mul.

Policy (`QuantizeConfig.attention`):
  * "auto" (default): projections and MLP in int8 on every runtime. ONNX Runtime (onnxruntime
    flavour): only Conv/Gemm/MatMul (with the Relu/pools it fuses into them) are quantized
    (ORT_ATTENTION_OPS): the residual Adds, GELU's Mul, LayerNorm and Softmax stay float (by
    default ONNX Runtime's quantizer would also put the residual stream and GELU through uint8
    QLinearAdd/QLinearMul, and wrap LayerNorm, which has no int8 kernel, in Q/DQ). The two
    attention MatMuls start in int8 and the accuracy budget's sensitivity ranking keeps them
    float when they cost accuracy (they are candidates like every other layer). The TensorRT
    flavour quantizes only Conv/Gemm/MatMul inputs anyway. OpenVINO: NNCF with
    `model_type=ModelType.TRANSFORMER` (its transformer patterns: LayerNorm, Softmax, GELU and
    the score MatMuls handled as NNCF judges best).
  * "float": as "auto", and the attention MatMuls are kept float from the start (both runtimes).
  * "int8": no attention-specific choice (ONNX Runtime quantizes everything it can, NNCF uses its
    default model type) — the baseline the benchmark compares against.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

POLICIES = ("auto", "float", "int8")
# The compute ops and the activations/pools ONNX Runtime fuses with them: no element-wise
# QLinear op (residual Add, GELU's Mul), no normalisation, no data movement (a quantized
# Transpose would hand the residual stream a dequantized tensor)
ORT_ATTENTION_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Relu", "Clip", "MaxPool",
                     "AveragePool")


@dataclass
class AttentionNodes:
    """Node names of an ONNX model's attention parts, in graph order."""

    score_matmuls: list[str] = field(default_factory=list)   # MatMul of two activations
    softmax: list[str] = field(default_factory=list)
    layernorm: list[str] = field(default_factory=list)

    @property
    def found(self) -> bool:
        """An attention model: some Softmax feeds (or is fed from) an activation × activation
        MatMul."""
        return bool(self.score_matmuls and self.softmax)


def find_attention_nodes(model: Any) -> AttentionNodes:
    """The attention parts of an onnx.ModelProto (see the module docstring)."""
    graph = model.graph
    constants = {t.name for t in graph.initializer}
    constants |= {out for n in graph.node if n.op_type == "Constant" for out in n.output}
    producers = {out: n for n in graph.node for out in n.output}

    def is_constant(name: str) -> bool:
        # a weight, or a weight behind DequantizeLinear / Transpose / Cast
        seen = 0
        while name not in constants and seen < 4:
            node = producers.get(name)
            if node is None or node.op_type not in ("DequantizeLinear", "Transpose", "Cast",
                                                    "Identity") or not node.input:
                return False
            name, seen = node.input[0], seen + 1
        return name in constants

    found = AttentionNodes()
    for node in graph.node:
        if node.op_type == "MatMul" and not any(is_constant(i) for i in node.input):
            found.score_matmuls.append(node.name)
        elif node.op_type == "Softmax":
            found.softmax.append(node.name)
        elif node.op_type == "LayerNormalization":
            found.layernorm.append(node.name)
    return found


def float_nodes(model: Any, policy: str, runtime: str) -> dict[str, str]:
    """{node name: reason} to keep in float for `policy` on `runtime` ("onnxruntime", "openvino"
    or "tensorrt"): the score MatMuls under "float"; empty for a model without attention
    (LayerNorm, Softmax and GELU stay float on ONNX Runtime through `ort_settings`)."""
    nodes = find_attention_nodes(model)
    if policy == "int8" or not nodes.found:
        return {}
    out: dict[str, str] = {}
    if policy == "float":
        out.update({name: "attention score MatMul (activation × activation) kept float "
                          "(attention: float)" for name in nodes.score_matmuls})
    return out


def ort_settings(model: Any, policy: str) -> dict[str, tuple[str, ...]]:
    """QdqSettings fields for an attention model under `policy` ({} keeps ONNX Runtime's
    defaults): the op types to quantize, and MatMul/Gemm outputs left float (ONNX Runtime then
    runs them as int8 MatMuls with float output, MatMulIntegerToFloat, and the bias Add, the
    residual Add and LayerNorm read float)."""
    if policy == "int8" or not find_attention_nodes(model).found:
        return {}
    return {"op_types": ORT_ATTENTION_OPS, "float_outputs": ("MatMul", "Gemm")}


def nncf_model_type(model: Any, policy: str) -> str | None:
    """NNCF's model type for an attention model ("transformer"), None otherwise or for int8."""
    return "transformer" if policy != "int8" and find_attention_nodes(model).found else None
