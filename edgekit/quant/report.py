"""What a QDQ model actually quantized, read from the file itself (not from what was asked):
the layers that run in int8 with their scales, the compute layers that stayed float and why,
and the scale ranges. Needs `onnx` and numpy only. (What TensorRT's explicit quantization needs
is checked by edgekit/targets/tensorrt.py `tensorrt_qdq_problems`.)"""

from __future__ import annotations

from typing import Any, TypedDict

import numpy as np

from edgekit.io.onnxops import COMPUTE_OPS, QDQ_OPS, RECURRENT_OPS

__all__ = ["COMPUTE_OPS", "QDQ_OPS", "RECURRENT_OPS", "RECURRENT_REASONS", "analyze_qdq"]

RECURRENT_REASONS = {
    "onnxruntime": "ONNX Runtime's static (QDQ) quantizer has no int8 {op} kernel (only dynamic "
                   "weight quantization); it runs in float on dequantized inputs",
    "tensorrt": "TensorRT's explicit quantization has no int8 {op}; it runs in float or half",
    "openvino": "kept in float: NNCF would quantize it, but an int8 LSTMSequence fails to "
                "compile on OpenVINO's CPU plugin (in bias correction), so edgekit keeps "
                "recurrent layers ({op}) float on OpenVINO",
}


def _graph_index(model) -> tuple[dict, dict, dict]:
    from onnx import numpy_helper

    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return producers, inits, consumers


def _const(name: str, inits: dict, producers: dict) -> np.ndarray | None:
    if name in inits:
        return inits[name]
    node = producers.get(name)
    if node is not None and node.op_type == "Constant":
        from onnx import numpy_helper

        return numpy_helper.to_array(node.attribute[0].t)
    return None


def _dq_params(dq, inits: dict, producers: dict) -> dict[str, Any]:
    scale = _const(dq.input[1], inits, producers)
    zero = _const(dq.input[2], inits, producers) if len(dq.input) > 2 and dq.input[2] else None
    axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
    data = _const(dq.input[0], inits, producers)
    return {"scale": scale, "zero_point": zero, "axis": axis, "constant": data is not None,
            "data": data}


def _range(values: list[float]) -> list[float] | None:
    return [float(min(values)), float(max(values))] if values else None


class QuantizedLayer(TypedDict, total=False):
    """A compute layer that runs in int8: its input's and weights' scales (one, or the range
    of a per-channel set), and for OpenVINO the ops made from it."""

    name: str
    op: str
    input_quantized: bool
    input_scale: float | list[float] | None
    weight_quantized: bool
    weight_scale: float | list[float] | None
    weight_per_channel: bool
    weight_axis: int | None
    openvino_ops: list[str]


class FloatLayer(TypedDict, total=False):
    """A compute or recurrent layer left in float, and why."""

    name: str
    op: str
    reason: str
    input_through_qdq: bool


class QuantReport(TypedDict, total=False):
    """What an int8 model holds (analyze_qdq, a backend's report): its int8 and float layers,
    the ranges of its scales, the counts, and for OpenVINO what NNCF reported."""

    quantized_layers: list[QuantizedLayer]
    float_layers: list[FloatLayer]
    scale_ranges: dict[str, list[float] | None]
    counts: dict[str, int | None]
    nncf: dict[str, Any]


def analyze_qdq(model, *, flavour: str = "onnxruntime",
                kept_float: dict[str, str] | None = None) -> QuantReport:
    """{"quantized_layers": [...], "float_layers": [...], "scale_ranges": {...}, "counts": {...}}.

    `kept_float` maps node names edgekit excluded on purpose to the reason (budget, user)."""
    kept_float = dict(kept_float or {})
    producers, inits, _ = _graph_index(model)
    quantized: list[QuantizedLayer] = []
    floating: list[FloatLayer] = []
    activation_scales: list[float] = []
    weight_scales: list[float] = []
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear":
            scale = _const(node.input[1], inits, producers)
            if scale is not None:
                activation_scales += np.ravel(scale).astype(float).tolist()
        if node.op_type in QDQ_OPS:
            continue
        feeding = [producers.get(i) for i in node.input]
        dqs = [p for p in feeding if p is not None and p.op_type == "DequantizeLinear"]
        if node.op_type in COMPUTE_OPS:
            # A layer kept float on purpose (by the budget, the user) is float even when a
            # DequantizeLinear feeds its input: the layer before it wrote a quantized activation.
            if dqs and node.name not in kept_float:
                entry: QuantizedLayer = {"name": node.name, "op": node.op_type}
                for role, index in (("input", 0), ("weight", 1)):
                    p = feeding[index] if index < len(feeding) else None
                    if p is None or p.op_type != "DequantizeLinear":
                        entry[f"{role}_quantized"] = False
                        continue
                    params = _dq_params(p, inits, producers)
                    scale = np.ravel(params["scale"]).astype(float) if params["scale"] is not None \
                        else np.array([])
                    entry[f"{role}_scale"] = float(scale[0]) if scale.size == 1 \
                        else _range(scale.tolist())
                    if role == "weight":
                        entry["weight_per_channel"] = bool(scale.size > 1)
                        if scale.size > 1:
                            entry["weight_axis"] = params["axis"]
                        weight_scales += scale.tolist()
                quantized.append(entry)
            else:
                reason = kept_float.get(node.name) or (
                    "not quantized: ONNX Runtime found no int8 pattern for it here")
                floating.append({"name": node.name, "op": node.op_type, "reason": reason,
                                 **({"input_through_qdq": True} if dqs else {})})
        elif node.op_type in RECURRENT_OPS:
            reason = RECURRENT_REASONS.get(flavour, RECURRENT_REASONS["onnxruntime"])
            floating.append({"name": node.name, "op": node.op_type,
                             "reason": reason.format(op=node.op_type),
                             "input_through_qdq": bool(dqs)})
    compute_total = len(quantized) + sum(1 for f in floating if f["op"] in COMPUTE_OPS)
    return {
        "quantized_layers": quantized,
        "float_layers": floating,
        "scale_ranges": {"activation": _range(activation_scales), "weight": _range(weight_scales)},
        "counts": {"compute_layers": compute_total, "int8": len(quantized),
                   "float": len(floating),
                   "quantize_nodes": sum(1 for n in model.graph.node if n.op_type == "QuantizeLinear"),
                   "dequantize_nodes": sum(1 for n in model.graph.node
                                           if n.op_type == "DequantizeLinear")},
    }


def summary_line(report: QuantReport) -> str:
    """'5/5 int8; float: GRU' for the screen."""
    counts = report["counts"]
    floats = sorted({f["op"] for f in report["float_layers"]})
    text = f"{counts['int8']}/{counts['compute_layers']} int8"
    return text + (f"; float: {', '.join(floats)}" if floats else "")
