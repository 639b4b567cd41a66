"""What a QDQ model actually quantized, read from the file itself (not from what was asked):
the layers that run in int8 with their scales, the compute layers that stayed float and why,
and the scale ranges. Also the properties TensorRT's explicit quantization needs, checked on the
file. Needs `onnx` and numpy only."""

from __future__ import annotations

from typing import Any

import numpy as np

COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
RECURRENT_OPS = ("LSTM", "GRU", "RNN")
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")

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


def analyze_qdq(model, *, flavour: str = "onnxruntime",
                kept_float: dict[str, str] | None = None) -> dict[str, Any]:
    """{"quantized_layers": [...], "float_layers": [...], "scale_ranges": {...}, "counts": {...}}.

    `kept_float` maps node names edgekit excluded on purpose to the reason (budget, user)."""
    kept_float = dict(kept_float or {})
    producers, inits, _ = _graph_index(model)
    quantized, floating = [], []
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
            if dqs:
                entry: dict[str, Any] = {"name": node.name, "op": node.op_type}
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
                floating.append({"name": node.name, "op": node.op_type, "reason": reason})
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


def summary_line(report: dict[str, Any]) -> str:
    """'5/5 int8; float: GRU' for the screen."""
    counts = report["counts"]
    floats = sorted({f["op"] for f in report["float_layers"]})
    text = f"{counts['int8']}/{counts['compute_layers']} int8"
    return text + (f"; float: {', '.join(floats)}" if floats else "")


# ---------------------------------------------------------------- TensorRT flavour
def _output_axis(node, weight: np.ndarray) -> int:
    """The output-channel axis of a Conv / ConvTranspose / Gemm / MatMul weight."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "ConvTranspose":
        return 1
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return weight.ndim - 1  # MatMul: B is (..., K, N)


def tensorrt_problems(model, *, allow_float: tuple[str, ...] = ()) -> list[str]:
    """Why TensorRT's explicit quantization would not take this QDQ model as int8, or run it
    differently than intended; empty when it is fine. Checked:
      * every Q/DQ is signed int8 with zero point 0 (symmetric);
      * every Conv/ConvTranspose/Gemm/MatMul (except those in allow_float) has DQ on its data
        input fed by a Q (a Q/DQ pair) and DQ on its constant weight;
      * weight scales are per channel along the output-channel axis, one per channel;
      * biases are float (TensorRT does not take int32 DequantizeLinear)."""
    producers, inits, _ = _graph_index(model)
    problems: list[str] = []
    for node in model.graph.node:
        if node.op_type not in QDQ_OPS:
            continue
        zero_name = node.input[2] if len(node.input) > 2 else ""
        zero = _const(zero_name, inits, producers) if zero_name else None
        if node.op_type == "DequantizeLinear":
            data = _const(node.input[0], inits, producers)
            if data is not None and data.dtype == np.int32:
                problems.append(f"{node.name}: int32 DequantizeLinear (a quantized bias); "
                                "TensorRT needs float biases")
                continue
        if zero is None:
            problems.append(f"{node.name}: no zero point, so the type defaults to uint8 "
                            "(TensorRT needs int8)")
        elif zero.dtype != np.int8:
            problems.append(f"{node.name}: zero point is {zero.dtype}, TensorRT needs int8")
        elif np.any(zero != 0):
            problems.append(f"{node.name}: zero point {np.unique(zero)[:4].tolist()} is not 0 "
                            "(TensorRT needs symmetric quantization)")
    for node in model.graph.node:
        if node.op_type not in COMPUTE_OPS or node.name in allow_float:
            continue
        data_dq = producers.get(node.input[0])
        if data_dq is None or data_dq.op_type != "DequantizeLinear":
            problems.append(f"{node.name} ({node.op_type}): its input has no DequantizeLinear")
        elif (q := producers.get(data_dq.input[0])) is None or q.op_type != "QuantizeLinear":
            if _const(data_dq.input[0], inits, producers) is None:
                problems.append(f"{node.name} ({node.op_type}): its input's DequantizeLinear "
                                "is not fed by a QuantizeLinear")
        weight_dq = producers.get(node.input[1]) if len(node.input) > 1 else None
        if weight_dq is None or weight_dq.op_type != "DequantizeLinear":
            problems.append(f"{node.name} ({node.op_type}): its weight has no DequantizeLinear")
            continue
        params = _dq_params(weight_dq, inits, producers)
        weight = params["data"]
        if weight is None:
            q = producers.get(weight_dq.input[0])
            weight = _const(q.input[0], inits, producers) if q is not None else None
        if weight is None:
            problems.append(f"{node.name} ({node.op_type}): weight is not a constant")
            continue
        scale = np.ravel(params["scale"])
        axis = _output_axis(node, weight)
        channels = weight.shape[axis]
        if scale.size != channels or params["axis"] % weight.ndim != axis:
            problems.append(f"{node.name} ({node.op_type}): weight scales are not per channel on "
                            f"the output-channel axis {axis} ({scale.size} scales on axis "
                            f"{params['axis']}, {channels} output channels)")
        if len(node.input) > 2 and node.input[2]:
            bias_src = producers.get(node.input[2])
            if bias_src is not None and bias_src.op_type == "DequantizeLinear":
                problems.append(f"{node.name} ({node.op_type}): bias is quantized; TensorRT "
                                "needs it in float")
    return problems
