"""int8 for attention models: which ONNX nodes are attention, and what each runtime keeps float.

What an exported attention block looks like (torch.onnx dynamo exporter, opset 18, edgekit's zoo
and timm's layout): MatMul/Gemm with weight initializers for the projections (qkv, proj) and the
MLP (fc1, fc2); two MatMuls whose inputs are both activations (q·kᵀ and weights·v) around a
Softmax; LayerNormalization; GELU as Div → Erf → Add → Mul → Mul.

Policy (`QuantizeConfig.attention`):
  * "auto" (default): projections and MLP in int8 on every runtime. ONNX Runtime flavours keep
    LayerNormalization float (ONNX Runtime has no int8 LayerNorm kernel: Q/DQ around it only adds
    rounding error and time); Softmax and GELU are not quantized by ONNX Runtime's QDQ quantizer
    at all; the two attention MatMuls start in int8 and are kept float by the accuracy budget's
    sensitivity ranking when they cost accuracy (they are candidates like every other layer).
    OpenVINO: NNCF with `model_type=ModelType.TRANSFORMER` (its transformer patterns: LayerNorm,
    Softmax, GELU and the score MatMuls handled as NNCF judges best).
  * "float": as "auto", and the attention MatMuls are kept float from the start (both runtimes).
  * "int8": no attention-specific choice (ONNX Runtime quantizes everything it can, NNCF uses its
    default model type) — the baseline the benchmark compares against.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

POLICIES = ("auto", "float", "int8")


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
    """{node name: reason} to keep in float for `policy` on `runtime` ("onnxruntime", "openvino",
    or "tensorrt" for the TensorRT QDQ flavour, which quantizes only Conv/Gemm/MatMul inputs, so
    LayerNorm stays float there anyway); empty for a model without attention."""
    nodes = find_attention_nodes(model)
    if policy == "int8" or not nodes.found:
        return {}
    out: dict[str, str] = {}
    if runtime == "onnxruntime":
        out.update({name: "LayerNormalization: ONNX Runtime has no int8 kernel for it; Q/DQ "
                          "around it would only add rounding error and time (attention: auto)"
                    for name in nodes.layernorm})
    if policy == "float":
        out.update({name: "attention score MatMul (activation × activation) kept float "
                          "(attention: float)" for name in nodes.score_matmuls})
    return out


def nncf_model_type(model: Any, policy: str) -> str | None:
    """NNCF's model type for an attention model ("transformer"), None otherwise or for int8."""
    return "transformer" if policy != "int8" and find_attention_nodes(model).found else None
