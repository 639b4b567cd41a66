"""TensorRT export: an engine (.plan) built on the device that will run it, from the fp32 ONNX model
(fp32 / fp16) or from the TensorRT-flavour QDQ ONNX model (int8, explicit quantization).

Build settings: explicit-batch network from the ONNX parser; an optimization profile with
min/opt/max batch from the InputSpec (min 1, opt = the spec's batch, max 64 by default; fixed for a
fixed-batch spec); workspace limit (`--workspace-mb`); a timing cache kept in the output folder
(`tensorrt.timing-cache`) so rebuilds are fast; optional DLA core with GPU fallback (Jetson).
fp16 sets BuilderFlag.FP16; int8 sets INT8 (+FP16 for the layers left in float), and the
precision comes from the Q/DQ nodes of the QDQ model. TensorRT >= 11 removed these flags; there
the network is strongly typed and fp16 builds from an fp16 ONNX conversion.

Beside the engine: `<engine>.json` (TensorRT version, GPU name, compute capability, precision,
input profile, InputSpec, build settings); runtimes/tensorrt.py refuses an engine whose metadata
does not match the machine. The export deserialises the engine and runs it on real inputs
against the fp32 ONNX model (ONNX Runtime), like every target.

Everything that does not need TensorRT (QDQ input selection and checks, profiles, metadata) is
plain Python and tested on machines without it.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
from pydantic import Field

from edgekit.errors import ExportError, InputError
from edgekit.io.files import atomic_write_bytes
from edgekit.io.manifest import MANIFEST_NAME, Manifest, library_versions
from edgekit.io.onnxops import COMPUTE_OPS as WEIGHTED_OPS
from edgekit.io.onnxops import QDQ_OPS
from edgekit.runtimes.records import BuildInfo, InputProfile
from edgekit.runtimes.tensorrt import (
    engine_metadata,
    import_cudart,
    import_tensorrt,
    machine_info,
    metadata_path,
    require_gpu,
    write_engine_metadata,
)
from edgekit.spec import InputSpec
from edgekit.targets.base import Artifact, Target, TargetOptions
from edgekit.targets.onnx import Tolerance, check_parity, ort_logits, parity_inputs

DEFAULT_MAX_BATCH = 64
TIMING_CACHE = "tensorrt.timing-cache"
# fp32 engines may use TF32 (TensorRT's default on Ampere and later), so both float precisions
# get the fp16-style tolerance.
TOLERANCE_SCALE = {"fp32": 100.0, "fp16": 100.0}
MAKE_QDQ_HINT = ("make it first: edgekit compress MODEL.pt --int8 --for tensorrt --calib DATA "
                 "(the model's own kind of images) -o {folder}")


# ---------------------------------------------------------------- int8 input (no TensorRT needed)
def is_qdq(model) -> bool:
    return any(node.op_type in QDQ_OPS for node in model.graph.node)


def _constants(model) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
    return values


def _output_axis(op_type: str, node, ndim: int) -> int:
    """The output-channel axis of a Conv / ConvTranspose / Gemm / MatMul weight."""
    if op_type == "Conv":
        return 0
    if op_type == "ConvTranspose":
        return 1
    if op_type == "Gemm":
        return 0 if next((a.i for a in node.attribute if a.name == "transB"), 0) else 1
    return ndim - 1  # MatMul: B is (..., K, N)


class QdqSummary(TypedDict):
    """What a QDQ model holds, as TensorRT's explicit quantization sees it."""

    quantize_nodes: int
    dequantize_nodes: int
    per_channel_weights: int
    quantized_layers: list[str]
    float_layers: list[str]


def tensorrt_qdq_problems(model, *, allow_float: tuple[str, ...] | None = None,
                          ) -> tuple[list[str], QdqSummary]:
    """Why TensorRT's explicit quantization would not take this QDQ model as int8 (empty when it
    would), and what it holds.

    Always required: signed int8 Q/DQ with zero points that are all 0 (symmetric) — a Q/DQ
    without a zero point is uint8 by the ONNX spec, so it fails too; positive finite scales;
    float biases (no int32 DequantizeLinear); per-channel weight scales on the output-channel
    axis (Conv: 0; ConvTranspose: 1; Gemm: 0 with transB=1, else 1; MatMul: last; a MatMul of
    two activations, as attention's, takes per-tensor scales on both).
    With `allow_float` (what `--for tensorrt` promises when it writes the file): every
    Conv/ConvTranspose/Gemm/MatMul not named there takes a Q/DQ pair on its input and
    per-channel weights. The summary counts Q/DQ nodes and per-channel weights and lists the
    layers with quantized inputs and those left float."""
    consts = _constants(model)
    producers = {out: node for node in model.graph.node for out in node.output}
    problems: list[str] = []
    counts = {op: 0 for op in QDQ_OPS}
    for node in model.graph.node:
        if node.op_type in QDQ_OPS:
            counts[node.op_type] += 1
            problems += _qdq_node_problems(node, consts)
    quantized, float_layers, per_channel = [], [], 0
    for node in model.graph.node:
        if node.op_type not in WEIGHTED_OPS:
            continue
        label = node.name or node.output[0]
        must = allow_float is not None and node.name not in allow_float
        feeds = [producers.get(i) for i in node.input[:2]]
        if not all(f is not None and f.op_type == "DequantizeLinear" for f in feeds):
            float_layers.append(label)
            if must:
                problems.append(f"{label} ({node.op_type}): its input or weight has no "
                                "DequantizeLinear")
            continue
        quantized.append(label)
        found, channels = _quantized_layer_problems(node, label, feeds, consts, producers, must)
        problems += found
        per_channel += channels
    if not counts["QuantizeLinear"] and not counts["DequantizeLinear"]:
        problems.append("no QuantizeLinear/DequantizeLinear nodes: this is not a QDQ model")
    return problems, {"quantize_nodes": counts["QuantizeLinear"],
                      "dequantize_nodes": counts["DequantizeLinear"],
                      "per_channel_weights": per_channel, "quantized_layers": quantized,
                      "float_layers": float_layers}


def _qdq_node_problems(node: Any, consts: dict[str, np.ndarray]) -> list[str]:
    """What keeps one Q/DQ node from TensorRT: a quantized bias, bad scales, a zero point that
    is missing (uint8), not int8 or not 0."""
    label = node.name or node.output[0]
    data = consts.get(node.input[0])
    if node.op_type == "DequantizeLinear" and data is not None and data.dtype == np.int32:
        return [f"{label}: int32 DequantizeLinear (a quantized bias); TensorRT needs "
                "biases left in float (ONNX Runtime: QuantizeBias=False)"]
    problems = []
    scale = consts.get(node.input[1]) if len(node.input) > 1 else None
    if scale is not None and (not np.isfinite(scale).all() or (scale <= 0).any()):
        problems.append(f"{label}: scales must be positive and finite")
    zp_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if zp_name is None:
        return [*problems, f"{label}: no zero point, so the type is uint8 (TensorRT needs int8 "
                "with zero point 0)"]
    zp = consts.get(zp_name)
    if zp is None:
        problems.append(f"{label}: zero point {zp_name!r} is not a constant")
    elif zp.dtype != np.int8:
        problems.append(f"{label}: {zp.dtype} quantization (TensorRT needs signed int8)")
    elif np.any(zp != 0):
        problems.append(f"{label}: zero point {int(zp.flat[np.flatnonzero(zp)[0]])} "
                        "(TensorRT needs symmetric quantization, zero point 0)")
    return problems


def _quantized_layer_problems(node: Any, label: str, feeds: list[Any],
                              consts: dict[str, np.ndarray], producers: dict[str, Any],
                              must: bool) -> tuple[list[str], int]:
    """What keeps one Conv/Gemm/MatMul with quantized inputs from TensorRT's int8 (its input's
    DQ not fed by a Q, weight scales not per channel or on another axis than the output
    channels), and 1 when its weights are per channel (else 0)."""
    problems = []
    data_dq, weight_dq = feeds
    if must and data_dq.input[0] not in consts and (
            (q := producers.get(data_dq.input[0])) is None or q.op_type != "QuantizeLinear"):
        problems.append(f"{label} ({node.op_type}): its input's DequantizeLinear is not fed "
                        "by a QuantizeLinear")
    scale = consts.get(weight_dq.input[1])
    weight = consts.get(weight_dq.input[0])
    if weight is None and (q := producers.get(weight_dq.input[0])) is not None:
        weight = consts.get(q.input[0])
    if weight is None and node.op_type == "MatMul":
        return problems, 0  # activation × activation (attention's q·kᵀ, weights·v): per tensor
    if scale is None or scale.size <= 1:
        if must:
            problems.append(f"{label} ({node.op_type}): weight scales are not per channel")
        return problems, 0
    ndim = weight.ndim if weight is not None else 2
    axis = next((a.i for a in weight_dq.attribute if a.name == "axis"), 1) % ndim
    want = _output_axis(node.op_type, node, ndim)
    if axis != want:
        problems.append(f"{label}: per-channel weight scales on axis {axis}, TensorRT needs "
                        f"the output-channel axis {want}")
    elif weight is not None and scale.size != weight.shape[want]:
        problems.append(f"{label}: {scale.size} weight scales for {weight.shape[want]} "
                        "output channels")
    return problems, 1


def check_qdq_for_tensorrt(model) -> QdqSummary:
    """`tensorrt_qdq_problems`'s summary of a QDQ model TensorRT will build from; raises
    InputError listing the violations."""
    problems, summary = tensorrt_qdq_problems(model)
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise InputError("this QDQ model is not what TensorRT's explicit quantization accepts: "
                         + "; ".join(problems[:5]) + more,
                         hint="quantize again for TensorRT: edgekit compress MODEL.pt --int8 "
                         "--for tensorrt (signed int8, symmetric, per-channel weights)")
    return summary


def find_tensorrt_qdq(folder: Path) -> Path | None:
    """The TensorRT-flavour QDQ model recorded in a folder's manifest (config flavour/for
    "tensorrt"), if any."""
    if not (folder / MANIFEST_NAME).exists():
        return None
    hits = [a for a in Manifest(folder).artifacts()
            if a.get("format") == "onnx" and "tensorrt" in (a.get("flavour"), a.get("for"))]
    return folder / hits[-1]["path"] if hits else None


def select_build_input(onnx_path: str | Path, precision: str) -> tuple[Path, QdqSummary | None]:
    """The ONNX model to build from, and its QDQ report for int8.

    fp32/fp16 build from the fp32 ONNX model (a QDQ model is refused). int8 builds from the
    source itself if it is a QDQ model, else from the folder's TensorRT-flavour QDQ model; none
    is an InputError that says how to make one."""
    from edgekit.io.onnxfile import load_onnx

    onnx_path = Path(onnx_path)
    model = load_onnx(onnx_path, load_external=False)
    if is_qdq(model):
        if precision != "int8":
            raise InputError(f"{onnx_path.name} is a quantized (QDQ) model; a {precision} engine "
                             "builds from the fp32 ONNX model",
                             hint="pass the output folder or its fp32 model.onnx, or use "
                             "--precision int8")
        return onnx_path, check_qdq_for_tensorrt(model)
    if precision != "int8":
        return onnx_path, None
    qdq = find_tensorrt_qdq(onnx_path.parent)
    if qdq is None:
        raise InputError(
            f"a TensorRT int8 engine builds from a TensorRT-flavour QDQ model (explicit "
            f"quantization), and {onnx_path.parent} holds none",
            hint=MAKE_QDQ_HINT.format(folder=onnx_path.parent))
    return qdq, check_qdq_for_tensorrt(load_onnx(qdq, load_external=False))


def input_profile(spec: InputSpec, *, min_batch: int = 1, opt_batch: int | None = None,
                  max_batch: int | None = None) -> InputProfile:
    """min/opt/max input shapes for the optimization profile, from the InputSpec."""
    rest = list(spec.shape[1:])
    if not spec.dynamic_batch:
        fixed = [spec.shape[0], *rest]
        return {"input": spec.input_name, "min": fixed, "opt": fixed, "max": fixed}
    opt = opt_batch or spec.shape[0]
    top = max_batch or max(DEFAULT_MAX_BATCH, opt)
    if not 1 <= min_batch <= opt <= top:
        raise InputError(f"batch profile must satisfy 1 <= min <= opt <= max, got "
                         f"{min_batch}/{opt}/{top}", hint="e.g. min 1, opt 1, max 64")
    return {"input": spec.input_name, "min": [min_batch, *rest], "opt": [opt, *rest],
            "max": [top, *rest]}


# ---------------------------------------------------------------- build (needs TensorRT)
def _weak_typing(trt) -> bool:
    return hasattr(trt.BuilderFlag, "FP16")


def build_engine(onnx_path: Path, *, precision: str, profile: InputProfile,
                 workspace_mb: int | None = None, dla: int | None = None,
                 gpu_fallback: bool = True, timing_cache: Path | None = None
                 ) -> tuple[bytes, BuildInfo]:
    """Serialized engine bytes and what the build used (TensorRT 10 Python API)."""
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    weak = _weak_typing(trt)
    flags = 0
    creation = trt.NetworkDefinitionCreationFlag
    if int(trt.__version__.split(".")[0]) < 10 and hasattr(creation, "EXPLICIT_BATCH"):
        flags |= 1 << int(creation.EXPLICIT_BATCH)
    if not weak and hasattr(creation, "STRONGLY_TYPED"):
        flags |= 1 << int(creation.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    with tempfile.TemporaryDirectory() as tmp:
        source = onnx_path
        if not weak and precision == "fp16":
            source = _fp16_onnx(onnx_path, Path(tmp))
        if not parser.parse_from_file(str(source)):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise ExportError(f"TensorRT's ONNX parser rejected {onnx_path.name}: "
                              + "; ".join(errors[:3]),
                              hint="check the operators against TensorRT's ONNX support matrix")
    config = builder.create_builder_config()
    if hasattr(trt, "ProfilingVerbosity"):  # layer names and precisions for `edgekit profile`
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    info: BuildInfo = {"weak_typing": weak}
    if workspace_mb:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
        info["workspace_mb"] = int(workspace_mb)
    if weak and precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if weak and precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
    if hasattr(trt.BuilderFlag, "TF32"):
        info["tf32"] = bool(config.get_flag(trt.BuilderFlag.TF32))
    if dla is not None:
        if precision == "fp32":
            raise InputError("DLA runs fp16 or int8 engines only", hint="use --precision fp16")
        cores = int(builder.num_DLA_cores)
        if dla < 0 or dla >= cores:
            raise InputError(f"DLA core {dla} does not exist here ({cores} DLA cores)",
                             hint="leave out --dla on a machine without DLA (DLA is on Jetson "
                             "AGX/NX Orin)" if not cores else f"use --dla 0..{cores - 1}")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(dla)
        if gpu_fallback:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
        info.update(dla_core=int(dla), gpu_fallback=gpu_fallback)
    inp = network.get_input(0)
    if any(int(d) < 0 for d in inp.shape):
        opt_profile = builder.create_optimization_profile()
        opt_profile.set_shape(inp.name, profile["min"], profile["opt"], profile["max"])
        config.add_optimization_profile(opt_profile)
    if timing_cache is not None:
        cached = timing_cache.read_bytes() if timing_cache.is_file() else b""
        cache = config.create_timing_cache(cached)
        if not config.set_timing_cache(cache, False):
            cache = config.create_timing_cache(b"")
            config.set_timing_cache(cache, False)
        info["timing_cache"] = {"path": timing_cache.name, "reused": bool(cached)}
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    info["build_seconds"] = round(time.perf_counter() - start, 2)
    if serialized is None:
        raise ExportError(f"TensorRT could not build an engine from {onnx_path.name} "
                          f"({precision})", hint="run with a larger --workspace-mb, or see "
                          "TensorRT's log above")
    if timing_cache is not None:
        atomic_write_bytes(timing_cache, bytes(config.get_timing_cache().serialize()))
    return bytes(serialized), info


def _fp16_onnx(onnx_path: Path, tmp: Path) -> Path:
    """fp16 ONNX copy for strongly typed builds (TensorRT >= 11 has no FP16 flag)."""
    from edgekit.io.onnxfile import load_onnx, save_onnx
    from edgekit.targets.onnx import to_fp16

    out = tmp / "model.fp16.onnx"
    save_onnx(to_fp16(load_onnx(onnx_path)), out)
    return out


class TensorRtOptions(TargetOptions):
    workspace_mb: int | None = Field(None, ge=1, description="builder workspace limit")
    dla: int | None = Field(None, ge=0, description="DLA core to build for (Jetson)")
    gpu_fallback: bool = Field(True, description="DLA: layers the DLA lacks run on the GPU")
    min_batch: int = Field(1, ge=1, description="optimisation profile: smallest batch")
    opt_batch: int | None = Field(None, ge=1, description="optimisation profile: tuned batch")
    max_batch: int | None = Field(None, ge=1, description="optimisation profile: largest batch")
    timing_cache: str | None = Field(None, description="builder timing cache file")
    min_agreement: float | None = Field(None, ge=0, le=1,
                                        description="parity: top-1 agreement at least this")


class TensorRtTarget(Target):
    name = "tensorrt"
    precisions = ("fp32", "fp16", "int8")
    Options = TensorRtOptions

    def export(self, source: str | Path, out_dir: Path, *, precision: str = "fp16",
               parity_data: np.ndarray | None = None, data_dir: str | None = None,
               **options: Any) -> Artifact:
        """Build, save (engine + metadata), deserialise and run the engine once for parity."""
        from edgekit.io.artifacts import find_reference, spec_for

        opts = self.parse_options(options)
        workspace_mb, dla, gpu_fallback = opts.workspace_mb, opts.dla, opts.gpu_fallback
        min_batch, opt_batch, max_batch = opts.min_batch, opts.opt_batch, opts.max_batch
        timing_cache, filename = opts.timing_cache, opts.filename
        min_agreement, atol, rtol = opts.min_agreement, opts.atol, opts.rtol

        self.check_precision(precision)
        onnx_path = Path(source)
        build_input, qdq = select_build_input(onnx_path, precision)
        spec = spec_for(onnx_path)
        profile = input_profile(spec, min_batch=min_batch, opt_batch=opt_batch,
                                max_batch=max_batch)
        trt = import_tensorrt()
        cudart = import_cudart()
        require_gpu(cudart)
        machine = machine_info(trt, cudart)
        out_dir = Path(out_dir)
        suffix = f".dla{dla}" if dla is not None else ""
        plan = out_dir / (filename or f"model.{precision}{suffix}.plan")
        cache = Path(timing_cache) if timing_cache else out_dir / TIMING_CACHE
        engine, build = build_engine(build_input, precision=precision, profile=profile,
                                     workspace_mb=workspace_mb, dla=dla,
                                     gpu_fallback=gpu_fallback, timing_cache=cache)
        meta = engine_metadata(machine, precision=precision, input_profile=profile, spec=spec,
                               dla_core=dla, build=build, source_onnx=build_input.name)
        metadata_path(plan).unlink(missing_ok=True)
        atomic_write_bytes(plan, engine)
        write_engine_metadata(plan, meta)
        reference_path = onnx_path
        if build_input == onnx_path and qdq is not None:  # given the QDQ model itself
            reference_path = find_reference(onnx_path) or onnx_path
        try:
            measured = self._parity(plan, spec, reference_path, parity_data, precision,
                                    min_agreement, atol, rtol)
        except BaseException:
            plan.unlink(missing_ok=True)
            metadata_path(plan).unlink(missing_ok=True)
            raise
        config: dict[str, Any] = {"source_onnx": build_input.name, "input_profile": profile,
                                  "metadata": metadata_path(plan).name,
                                  "gpu": machine["gpu_name"],
                                  "compute_capability": machine["compute_capability"],
                                  "dla_core": dla, "build": build}
        if qdq is not None:
            config["qdq"] = {k: v for k, v in qdq.items() if k != "quantized_layers"}
        return Artifact(path=plan, format="tensorrt", precision=precision,
                        metrics={"parity": measured}, config=config,
                        versions={**library_versions("tensorrt", "cuda-python", "onnx",
                                                     "onnxruntime"),
                                  "tensorrt_runtime": machine["tensorrt_version"]})

    @staticmethod
    def _parity(plan: Path, spec: InputSpec, reference_path: Path, parity_data: np.ndarray | None,
                precision: str, min_agreement: float | None, atol: float,
                rtol: float) -> dict[str, Any]:
        from edgekit.runtimes.tensorrt import TensorRtRunner

        x, x_source = parity_inputs(spec, parity_data)
        reference = ort_logits(reference_path, x)
        with TensorRtRunner(plan, spec) as runner:
            candidate = runner.predict(x, batch_size=min(runner.max_batch, 64))
        measured = check_parity(
            reference, candidate, what=f"TensorRT {precision} against {reference_path.name}",
            agreement=precision if min_agreement is None else min_agreement,
            tolerance=Tolerance(atol, rtol, TOLERANCE_SCALE.get(precision)),
            hint="for int8, calibrate with more representative data; otherwise report the "
                 "model with TensorRT's version")
        measured.update(inputs=x_source, reference=reference_path.name)
        return measured
