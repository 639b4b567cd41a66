"""The OpenVINO backend of the accuracy-budget loop: int8 IRs from NNCF (through
edgekit.targets.openvino.quantize_openvino), measured on OpenVINO itself against the fp32 model
compiled by OpenVINO in f32. Layers are named by their ONNX node names, which OpenVINO's ONNX
frontend keeps as op names ('X' or 'X/...')."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.quant.report import (
    COMPUTE_OPS,
    RECURRENT_OPS,
    RECURRENT_REASONS,
    FloatLayer,
    QuantizedLayer,
    QuantReport,
)
from edgekit.spec import InputSpec

OV_COMPUTE = ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "MatMul")
# Recurrent layers stay float on OpenVINO: NNCF 3.4 would quantize an LSTMSequence, and the
# result fails to compile on OpenVINO 2026.4's CPU plugin during bias correction
# ("LSTMSequence node ... expects Constant for port 4").
OV_SEQUENCE = {"LSTM": "LSTMSequence", "GRU": "GRUSequence", "RNN": "RNNSequence"}


class OpenVinoBackend:
    """fp32 ONNX → int8 OpenVINO IR (NNCF), measured on OpenVINO (CPU)."""

    runtime = "openvino"
    suffix = ".xml"

    def __init__(self, onnx_path: str | Path, spec: InputSpec, calib_x: np.ndarray,
                 workdir: Path, *, preset: str | None = None,
                 model_type: str | None = None) -> None:
        import onnx

        self.fp32 = Path(onnx_path)
        self.spec = spec
        self.calib_x = calib_x
        self.workdir = Path(workdir)
        self.preset = preset
        self.model_type = model_type  # "transformer" for attention models (NNCF's ModelType)
        self.last_report: dict[str, Any] = {}
        self.calibration: dict[str, Any] = {"samples": int(len(calib_x))}
        graph = onnx.load(str(self.fp32), load_external_data=False).graph
        self.onnx_compute = [(n.name, n.op_type) for n in graph.node if n.op_type in COMPUTE_OPS]
        self.onnx_recurrent = [(n.name, n.op_type) for n in graph.node
                               if n.op_type in RECURRENT_OPS]
        self._reference: Path | None = None

    # ----------------------------------------------------------- QuantBackend
    def reference_logits(self, x: np.ndarray) -> np.ndarray:
        from edgekit.runtimes.openvino import openvino_logits
        from edgekit.targets.openvino import convert_onnx, save_ir

        if self._reference is None:
            self._reference = save_ir(convert_onnx(self.fp32), self.workdir / "fp32.xml",
                                      spec=self.spec, precision="fp32")
        return openvino_logits(self._reference, x, inference_precision="f32")[0]

    def quantize(self, exclude: Sequence[str], out_stem: str) -> Path:
        from edgekit.targets.openvino import NNCFSettings, quantize_openvino

        out = self.workdir / f"{out_stem}.xml"
        recurrent = sorted({OV_SEQUENCE[op] for _, op in self.onnx_recurrent})
        settings = NNCFSettings(ignored_nodes=list(exclude), ignored_types=recurrent,
                                preset=self.preset, model_type=self.model_type)
        self.last_report = quantize_openvino(self.fp32, self.calib_x, out, settings,
                                             spec=self.spec)
        self.calibration.setdefault("seconds", self.last_report.get("seconds"))
        return out

    def logits(self, artifact: Path, x: np.ndarray) -> np.ndarray:
        from edgekit.runtimes.openvino import openvino_logits

        return openvino_logits(artifact, x)[0]

    def candidates(self, artifact: Path) -> list[str]:
        return [layer["name"] for layer in self.report(artifact, {})["quantized_layers"]]

    def discard(self, artifact: Path) -> None:
        from edgekit.runtimes.openvino import ir_weights_path

        Path(artifact).unlink(missing_ok=True)
        ir_weights_path(artifact).unlink(missing_ok=True)

    # ----------------------------------------------------------- for the pass
    def check_layer_names(self, names: Sequence[str]) -> None:
        """quantize_openvino itself names unknown layers (InputError)."""

    def finalize(self, artifact: Path, target: Path) -> Path:
        """Move the chosen IR (.bin first, then .xml) into place."""
        from edgekit.runtimes.openvino import ir_weights_path

        target = Path(target)
        target.unlink(missing_ok=True)
        os.replace(ir_weights_path(artifact), ir_weights_path(target))
        os.replace(artifact, target)
        return target

    def report(self, artifact: Path, kept_float: dict[str, str]) -> QuantReport:
        """Quantized ONNX layers (an OpenVINO op made from them reads a FakeQuantize or int8
        weights), float layers with reasons, FakeQuantize ranges."""
        from edgekit.runtimes.openvino import shared_core

        model = shared_core().read_model(str(artifact))
        quantized_ops: dict[str, str] = {}
        activation_scales: list[float] = []
        weight_scales: list[float] = []
        for op in model.get_ordered_ops():
            kind = op.get_type_name()
            if kind == "FakeQuantize":
                low = _constant(op, 1)
                high = _constant(op, 2)
                levels = op.get_attributes().get("levels", 256)
                if low is not None and high is not None:
                    activation_scales += np.ravel((high - low) / max(levels - 1, 1)).tolist()
            if kind not in OV_COMPUTE:
                continue
            sources = [i.get_source_output().get_node() for i in op.inputs()]
            weight = sources[1] if len(sources) > 1 else None
            if any(s.get_type_name() == "FakeQuantize" for s in sources) or (
                    weight is not None and "fq_weights" in weight.get_friendly_name()):
                quantized_ops[op.get_friendly_name()] = kind
                if weight is not None and weight.get_type_name() == "Multiply":
                    scale = _constant(weight, 1)
                    if scale is not None:
                        weight_scales += np.ravel(np.abs(scale)).tolist()
        quantized: list[QuantizedLayer] = []
        floating: list[FloatLayer] = []
        for name, op_type in self.onnx_compute:
            hits = [op for op in quantized_ops if op == name or op.startswith(name + "/")]
            if hits:
                quantized.append({"name": name, "op": op_type, "openvino_ops": hits})
            else:
                floating.append({"name": name, "op": op_type,
                                 "reason": kept_float.get(name, "not quantized by NNCF")})
        for name, op_type in self.onnx_recurrent:
            floating.append({"name": name, "op": op_type,
                             "reason": RECURRENT_REASONS["openvino"].format(op=op_type)})

        def span(values: list[float]) -> list[float] | None:
            return [float(min(values)), float(max(values))] if values else None

        return {"quantized_layers": quantized, "float_layers": floating,
                "scale_ranges": {"activation": span(activation_scales),
                                 "weight": span(weight_scales)},
                "counts": {"compute_layers": len(self.onnx_compute), "int8": len(quantized),
                           "float": len(floating),
                           "fake_quantize_ops": self.last_report.get("fake_quantize_ops")},
                "nncf": {k: v for k, v in self.last_report.items() if k != "ignored_requested"}}


def _constant(op, index: int) -> np.ndarray | None:
    """The value of op's input `index` when it is a Constant (possibly behind a Convert)."""
    node = op.input(index).get_source_output().get_node()
    if node.get_type_name() == "Convert":
        node = node.input(0).get_source_output().get_node()
    if node.get_type_name() != "Constant":
        return None
    return np.asarray(node.get_data(), dtype=np.float64)
