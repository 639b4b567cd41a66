"""int8 with ONNX Runtime's static quantizer (QDQ format), in two flavours:

* `onnxruntime` — for ONNX Runtime on CPU: uint8 activations (asymmetric; the u8·s8 path that
  VNNI and ARM dot-product kernels run fastest), int8 weights symmetric and per channel,
  every operator ONNX Runtime can quantize.
* `tensorrt` — for TensorRT's explicit quantization: signed int8 activations and weights, both
  symmetric (zero point 0), weights per channel on the output-channel axis, Q/DQ pairs only on
  the inputs of Conv / ConvTranspose / Gemm / MatMul, biases left in float.

Steps: fold BatchNorm into the preceding Conv (if the exporter has not), ONNX Runtime's
pre-processing (`quant_pre_process`: symbolic shape inference and graph optimisation),
calibration (min-max, percentile, entropy, or edgekit's MSE on ONNX Runtime's histograms),
stored once as a range cache so that the accuracy-budget loop can re-quantize with other layers
excluded without calibrating again, then `quantize_static`.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import ConfigError, DataError, ExportError
from edgekit.quant.calibration import batches

FLAVOURS = ("onnxruntime", "tensorrt")
METHODS = ("minmax", "percentile", "entropy", "mse")
TENSORRT_OPS = ["Conv", "ConvTranspose", "Gemm", "MatMul"]


@dataclass(frozen=True)
class QdqSettings:
    """How to quantize; `describe()` is what the manifest records."""

    method: str = "percentile"
    percentile: float = 99.99
    per_channel: bool = True
    flavour: str = "onnxruntime"
    reduce_range: bool = False
    calib_batch: int = 32
    # onnxruntime flavour: the op types to quantize (None: every one ONNX Runtime can); set for
    # attention models by edgekit.quant.attention.ort_op_types
    op_types: tuple[str, ...] | None = None
    float_outputs: tuple[str, ...] | None = None  # op types whose outputs stay float

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown calibration method {self.method!r}",
                              hint=f"choose one of: {', '.join(METHODS)}")
        if self.flavour not in FLAVOURS:
            raise ConfigError(f"unknown QDQ flavour {self.flavour!r}",
                              hint=f"choose one of: {', '.join(FLAVOURS)}")
        if self.flavour == "tensorrt" and not self.per_channel:
            raise ConfigError("the TensorRT flavour quantizes weights per channel",
                              hint="drop per_channel: false, or use the onnxruntime flavour")

    @property
    def symmetric_activations(self) -> bool:
        return self.flavour == "tensorrt"

    def describe(self) -> dict[str, Any]:
        trt = self.flavour == "tensorrt"
        return {
            "format": "QDQ", "flavour": self.flavour, "method": self.method,
            **({"percentile": self.percentile} if self.method == "percentile" else {}),
            "activations": "int8 symmetric (zero point 0)" if trt else "uint8 asymmetric",
            "weights": "int8 symmetric, " + ("per channel (output-channel axis)"
                                             if self.per_channel else "per tensor"),
            "reduce_range": self.reduce_range,
            "op_types": TENSORRT_OPS if trt else (list(self.op_types) if self.op_types
                                                  else "all ONNX Runtime can quantize"),
            **({"float_outputs": list(self.float_outputs)}
               if self.float_outputs and not trt else {}),
            "bias": "float" if trt else "int32",
        }


def default_reduce_range() -> bool:
    """7-bit weights when this is an x86 CPU without VNNI. ONNX Runtime's u8s8 kernels there
    multiply with VPMADDUBSW, whose int16 pair sums saturate; its documentation recommends
    reduce_range on such CPUs. Measured on an AMD EPYC with AVX2 (2026-12-06): a random-weight
    mobilenet_v3_small at 64×64 kept 0.62 top-1 agreement with fp32 (SQNR 12 dB) with 8-bit
    weights and 1.00 (23 dB) with 7-bit ones. VNNI (VPDPBUSD sums into int32), ARM and GPUs do
    not saturate, and keep 8-bit weights."""
    import platform

    from edgekit.cpu import cpu_flags

    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return False
    flags = cpu_flags()
    return bool(flags) and not flags & {"avx512_vnni", "avx_vnni", "amx_int8"}


# ---------------------------------------------------------------- preparation
def fold_batchnorm(model) -> int:
    """Fold every BatchNormalization that follows a Conv (whose output nothing else reads) into
    the Conv's weight and bias, in place. Returns how many were folded."""
    from onnx import numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    producers = {out: node for node in graph.node for out in node.output}
    graph_outputs = {o.name for o in graph.output}
    folded = 0
    for bn in [n for n in graph.node if n.op_type == "BatchNormalization"]:
        conv = producers.get(bn.input[0])
        if conv is None or conv.op_type != "Conv" or consumers.get(bn.input[0], 0) != 1 \
                or bn.input[0] in graph_outputs or len(bn.output) > 1 and any(bn.output[1:]):
            continue
        if not all(name in inits for name in bn.input[1:5]) or conv.input[1] not in inits \
                or (len(conv.input) > 2 and conv.input[2] and conv.input[2] not in inits):
            continue
        eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        scale, beta, mean, var = (numpy_helper.to_array(inits[n]).astype(np.float64)
                                  for n in bn.input[1:5])
        weight = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float64)
        has_bias = len(conv.input) > 2 and bool(conv.input[2])
        bias = numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64) if has_bias \
            else np.zeros(weight.shape[0])
        factor = scale / np.sqrt(var + eps)
        new_weight = (weight * factor.reshape(-1, *([1] * (weight.ndim - 1)))).astype(np.float32)
        new_bias = ((bias - mean) * factor + beta).astype(np.float32)
        weight_name = f"{conv.input[1]}_bnfolded"
        bias_name = f"{conv.name or conv.output[0]}_bnfolded_bias"
        graph.initializer.extend([numpy_helper.from_array(new_weight, weight_name),
                                  numpy_helper.from_array(new_bias, bias_name)])
        conv.input[1] = weight_name
        if has_bias:
            conv.input[2] = bias_name
        else:
            conv.input.append(bias_name)
        conv.output[0] = bn.output[0]
        graph.node.remove(bn)
        folded += 1
    return folded


def count_ops(model, op_type: str) -> int:
    return sum(1 for n in model.graph.node if n.op_type == op_type)


LARGE_NOTE = ("model past 2 GB (ONNX Runtime's quantization pre-processing serialises the model "
              "in memory, which protobuf cannot past 2 GB)")


def prepare(onnx_path: str | Path, workdir: Path) -> tuple[Path, dict[str, Any]]:
    """BatchNorm folding and ONNX Runtime's pre-processing; returns the prepared model's path
    and what was done (recorded in the manifest)."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edgekit.io.onnxfile import is_large, load_onnx, save_onnx

    model = load_onnx(onnx_path)  # refuses external data that leaves the model's folder
    bn_in_onnx = count_ops(model, "BatchNormalization")
    folded = fold_batchnorm(model)
    large = is_large(model)  # before saving: a large model's tensors then point at the file
    folded_path = save_onnx(model, workdir / "folded.onnx")  # past 2 GB: + folded.onnx.data
    prepared = workdir / "prepared.onnx"
    # absolute before the chdir below: a relative output folder (-o out/) would resolve twice
    folded_abs, prepared_abs = str(folded_path.resolve()), str(prepared.resolve())
    notes = []
    if large:
        # quant_pre_process holds the model in memory and serialises it (its symbolic shape
        # inference, its optimised copy): past 2 GB it cannot. ONNX's shape inference by path
        # writes prepared.onnx beside folded.onnx, whose weights file it keeps pointing at.
        try:
            onnx.shape_inference.infer_shapes_path(folded_abs, prepared_abs)
        except Exception as exc:  # noqa: BLE001 - onnx raises several types
            raise ExportError(f"ONNX shape inference failed on this {LARGE_NOTE}: "
                              f"{str(exc).splitlines()[0][:300]}",
                              hint="check that the model runs in ONNX Runtime; report the model"
                              ) from None
        notes.append(f"ONNX shape inference only: a {LARGE_NOTE}")
    else:
        for options in ({}, {"skip_symbolic_shape": True},
                        {"skip_optimization": True, "skip_symbolic_shape": True}):
            try:
                # chdir: ONNX Runtime's symbolic shape inference saves sym_shape_infer_temp.onnx
                # (+ external data) into the working directory when it gives up; keep it there.
                with _quiet(), contextlib.chdir(workdir.resolve()):
                    quant_pre_process(folded_abs, prepared_abs, **options)
                break
            except Exception as exc:  # noqa: BLE001 - each fallback is recorded
                notes.append(f"quant_pre_process{options or ''} failed: "
                             f"{str(exc).splitlines()[0][:160]}")
        else:
            raise ExportError("ONNX Runtime's quantization pre-processing failed: "
                              + "; ".join(notes),
                              hint="check that the model runs in ONNX Runtime; report the model")
    left = count_ops(onnx.load(str(prepared), load_external_data=False), "BatchNormalization")
    info = {
        "preprocess": ("onnx infer_shapes_path" if large else "onnxruntime quant_pre_process")
        + (f" ({'; '.join(notes)})" if notes else ""),
        "batchnorm": {"in_exported_onnx": bn_in_onnx, "folded_by_edgekit": folded,
                      "left_before_calibration": left,
                      "note": "none in the exported ONNX (the exporter folds BatchNorm into "
                      "the preceding Conv)" if bn_in_onnx == 0 else "folded into the preceding Conv before calibration"
                      if left == 0 else "some BatchNormalization nodes follow no Conv; they run "
                      "as their own (quantized) op"},
    }
    return prepared, info


# ---------------------------------------------------------------- calibration
def _quiet() -> contextlib.AbstractContextManager[None]:
    """ONNX Runtime's quantization tools print progress and log warnings; keep the screen ours
    (only theirs is silenced: other loggers and other threads are left alone)."""
    from edgekit.quiet import quiet_library

    return quiet_library("onnxruntime")


def _reader(input_name: str, arrays: list[np.ndarray]):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(arrays)

        def get_next(self) -> dict[str, np.ndarray] | None:
            item = next(self._it, None)
            return None if item is None else {input_name: item}

        def __len__(self) -> int:
            return len(arrays)

    return Reader()


def _input_batch(model) -> tuple[str, int | None]:
    """The model's (an onnx.ModelProto) input name and its static batch size (None: dynamic)."""
    graph_input = model.graph.input[0]
    dim = graph_input.type.tensor_type.shape.dim[0]
    return graph_input.name, (dim.dim_value if dim.HasField("dim_value") else None)


SAMPLED_VALUES = 1 << 20  # histogram values per tensor per calibration batch


def _speed_up(calibrator) -> None:
    """Two changes to ONNX Runtime's calibrator that keep its results and cut its time:
    * the augmented model runs with basic graph optimisations (ONNX Runtime disables them all
      there; basic ones never remove a node whose output is read), on all cores;
    * histogram methods build each batch's histogram from at most SAMPLED_VALUES values per
      tensor, taken with a stride, instead of all of them (a ResNet's first conv yields 25
      million per batch of 32); min and max stay exact."""
    import onnxruntime as ort
    from onnxruntime.quantization.calibrate import HistogramCalibrater, HistogramCollector

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.log_severity_level = 3
    calibrator.infer_session = ort.InferenceSession(str(calibrator.augmented_model_path), opts,
                                                    providers=["CPUExecutionProvider"])
    if not isinstance(calibrator, HistogramCalibrater):
        return

    class SamplingCollector(HistogramCollector):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.rng = np.random.default_rng(0)
            self.exact: dict[str, tuple[float, float]] = {}

        def collect(self, name_to_arr: dict[str, Any]) -> None:
            sampled = {}
            for name, arrays in name_to_arr.items():
                flat = [np.ravel(a) for a in (arrays if isinstance(arrays, list) else [arrays])]
                flat = [f for f in flat if f.size]
                if not flat:
                    continue
                lo = min(float(np.nanmin(f)) for f in flat)
                hi = max(float(np.nanmax(f)) for f in flat)
                old = self.exact.get(name, (lo, hi))
                self.exact[name] = (min(lo, old[0]), max(hi, old[1]))
                total = sum(f.size for f in flat)
                if total > SAMPLED_VALUES:
                    # A stride coprime to 2, 3, 5 and 7 walks every channel and position of
                    # tensors whose dimensions are made of those factors (28, 112, 224, ...).
                    step = total // SAMPLED_VALUES
                    while math.gcd(step, 210) != 1:
                        step += 1
                    flat = [f[int(self.rng.integers(step)) :: step] for f in flat]
                sampled[name] = np.concatenate(flat)
            super().collect(sampled)

    calibrator.collector = SamplingCollector(
        method=calibrator.method, symmetric=calibrator.symmetric, num_bins=calibrator.num_bins,
        num_quantized_bins=calibrator.num_quantized_bins, percentile=calibrator.percentile,
        scenario=calibrator.scenario)


def calibrate(prepared: Path, x: np.ndarray, settings: QdqSettings, workdir: Path) -> dict[str, Any]:
    """Run the calibration data through the model and store every tensor's (lo, hi) range in a
    cache file that quantize() reuses. Returns {"ranges": path, "seconds", "samples", "tensors"}."""
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import (
        TensorData,
        TensorsData,
        create_calibrator,
        save_tensors_data,
    )

    from edgekit.io.onnxfile import is_large_file
    from edgekit.progress import progress

    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy, "mse": CalibrationMethod.Entropy}[settings.method]
    symmetric = settings.symmetric_activations
    extra: dict[str, Any] = {"symmetric": symmetric}
    if settings.method == "percentile":
        extra.update(percentile=settings.percentile, num_bins=2048)
    elif settings.method in ("entropy", "mse"):
        # TensorRT's entropy calibration: 2048 histogram bins, 128 quantized bins.
        extra.update(num_bins=2048, num_quantized_bins=128, symmetric=False)
    input_name, chunks, batch_note = _calibration_chunks(prepared, x, settings)
    start = time.perf_counter()
    with _quiet():
        calibrator = create_calibrator(prepared, None,
                                       augmented_model_path=str(workdir / "augmented.onnx"),
                                       calibrate_method=method, extra_options=extra,
                                       use_external_data_format=is_large_file(prepared))
        _speed_up(calibrator)
    with progress(f"Calibrating ({settings.method}, {sum(map(len, chunks))} samples)",
                  total=sum(map(len, chunks))) as advance:
        for chunk in chunks:
            with _quiet():
                calibrator.collect_data(_reader(input_name, [chunk]))
            advance(len(chunk))
    with _quiet():
        if settings.method == "mse":
            from edgekit.quant.mse import mse_range

            exact = calibrator.collector.exact
            ranges = {k: mse_range(h[0], h[1], *exact[k], symmetric=symmetric)
                      for k, h in calibrator.collector.histogram_dict.items()}
        else:
            computed = calibrator.compute_data()
            ranges = {k: tuple(float(np.min(v)) if i == 0 else float(np.max(v))
                               for i, v in enumerate(td.range_value))
                      for k, td in computed.items()}
            observed = getattr(getattr(calibrator, "collector", None), "exact", {})
            if observed and not symmetric:
                # Histogram methods may return a range wider than anything seen (entropy is
                # symmetric by construction): clip to the observed min/max, so a ReLU output
                # does not spend half of its 256 levels on negative values it never takes.
                ranges = {k: (max(lo, observed[k][0]) if k in observed else lo,
                              min(hi, observed[k][1]) if k in observed else hi)
                          for k, (lo, hi) in ranges.items()}
    seconds = time.perf_counter() - start
    cache = workdir / "ranges.json"
    save_tensors_data(TensorsData(CalibrationMethod.MinMax, {
        k: TensorData(lowest=np.float32(lo), highest=np.float32(hi)) for k, (lo, hi) in ranges.items()
    }), cache)
    with contextlib.suppress(OSError):
        (workdir / "augmented.onnx").unlink()
    del calibrator
    out = {"ranges": cache, "seconds": round(seconds, 3), "samples": int(sum(map(len, chunks))),
           "tensors": len(ranges), "batch": len(chunks[0])}
    if batch_note:
        out["batch_note"] = batch_note
    return out


def _calibration_chunks(prepared: Path, x: np.ndarray,
                        settings: QdqSettings) -> tuple[str, list[np.ndarray], str | None]:
    """(the input name, the calibration batches, why they are smaller than asked, if they are):
    a model with a fixed batch gets only full batches of it; otherwise calib_batch_for."""
    import onnx

    from edgekit.events import emit
    from edgekit.io.files import format_size

    graph = onnx.load(str(prepared), load_external_data=False)  # read once: both need it
    input_name, static_batch = _input_batch(graph)
    if static_batch:
        chunks = [c for c in batches(x, static_batch) if len(c) == static_batch]
        if not chunks:
            raise DataError(f"this model takes a fixed batch of {static_batch}, and the "
                            f"calibration set has only {len(x)} samples",
                            hint=f"use at least {static_batch} calibration samples")
        return input_name, chunks, None
    size, per_sample = calib_batch_for(graph, settings.calib_batch)
    note = None
    if per_sample is not None and size < settings.calib_batch:
        note = (f"calibration batches of {size}, not {settings.calib_batch}: each sample's "
                f"intermediate tensors take {format_size(per_sample)}, and a batch's are held "
                f"at once (at most {format_size(CALIB_BATCH_BYTES)})")
        emit(f"int8: calibrating in batches of {size}, not {settings.calib_batch}: one "
             f"sample's intermediate tensors take {format_size(per_sample)}")
    return input_name, batches(x, size), note


# A calibration batch is run with every intermediate tensor as an output and all of them are
# held at once: torchvision's maxvit_t at 224x224 has 0.9 GB of them per sample, so the default
# batch of 32 asked for 28 GB and the kernel killed the process. Batches are cut to keep a
# batch's tensors under this (ONNX Runtime's own buffers come on top).
CALIB_BATCH_BYTES = 4 << 30


def calib_batch_for(model, wanted: int) -> tuple[int, int | None]:
    """(the calibration batch size, the bytes of one sample's float intermediate tensors from
    the prepared model's (an onnx.ModelProto) inferred shapes; None when they are not known)."""
    import onnx

    per_sample = 0
    for info in model.graph.value_info:
        tensor = info.type.tensor_type
        if tensor.elem_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in tensor.shape.dim[1:]]
        if dims and all(dims):
            per_sample += int(np.prod(dims)) * (4 if tensor.elem_type == 1 else 2)
    if per_sample == 0:
        return wanted, None
    return max(1, min(wanted, CALIB_BATCH_BYTES // per_sample)), per_sample


# ---------------------------------------------------------------- quantization
def strip_output_qdq(model) -> int:
    """Remove the Q/DQ pair ONNX Runtime puts on graph outputs: logits stay float (rounding them
    to 8 bits buys no speed and can clip or tie the winning class). Returns how many."""
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    removed = 0
    for output in graph.output:
        dq = producers.get(output.name)
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        q = producers.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear" or consumers.get(dq.input[0], 0) != 1:
            continue
        source = producers.get(q.input[0])
        if source is None or consumers.get(q.input[0], 0) != 1:
            continue
        source.output[list(source.output).index(q.input[0])] = output.name
        graph.node.remove(q)
        graph.node.remove(dq)
        removed += 1
    return removed


def quantize(prepared: Path, ranges: Path, out: Path, settings: QdqSettings, *,
             exclude: Sequence[str] = (), spec=None) -> Path:
    """quantize_static with the cached ranges; writes `out` (whole or not at all)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from edgekit.io.debris import pid_tag
    from edgekit.io.onnxfile import atomic_onnx, check_onnx_file, is_large_file, set_spec

    trt = settings.flavour == "tensorrt"
    extra: dict[str, Any] = {"WeightSymmetric": True, "ActivationSymmetric": trt}
    kwargs: dict[str, Any] = {
        "activation_type": QuantType.QInt8 if trt else QuantType.QUInt8,
        "weight_type": QuantType.QInt8,
    }
    if settings.op_types and not trt:
        kwargs["op_types_to_quantize"] = list(settings.op_types)
    if settings.float_outputs and not trt:
        extra["OpTypesToExcludeOutputQuantization"] = list(settings.float_outputs)
    if trt:
        kwargs["op_types_to_quantize"] = TENSORRT_OPS
        extra.update(QuantizeBias=False, OpTypesToExcludeOutputQuantization=TENSORRT_OPS)
    with atomic_onnx(out) as (tmp, save):
        # its own folder: past 2 GB, ONNX Runtime writes the weights in a file beside it
        with tempfile.TemporaryDirectory(prefix=f".quantize-{pid_tag()}-",
                                         dir=out.parent) as raw_dir:
            raw = Path(raw_dir) / "raw.onnx"
            with _quiet():
                quantize_static(str(prepared), str(raw), None, quant_format=QuantFormat.QDQ,
                                per_channel=settings.per_channel, reduce_range=settings.reduce_range,
                                nodes_to_exclude=list(exclude),
                                calibrate_method=CalibrationMethod.MinMax,
                                calibration_cache_path=str(ranges), extra_options=extra,
                                use_external_data_format=is_large_file(prepared), **kwargs)
            model = onnx.load(str(raw))
        strip_output_qdq(model)
        if spec is not None:
            set_spec(model, spec)
        model.producer_name = "edgekit"
        save(model)
        check_onnx_file(tmp, "the quantized model")
    return out
