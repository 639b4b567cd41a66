"""Per-layer time on the target, from each runtime's own profiler, joined to the ONNX node and
back to the PyTorch module it came from, with the precision that actually ran.

  ONNX Runtime  SessionOptions.enable_profiling; the JSON that end_profiling() writes has one
                `Node` event per kernel run (name `<node>_kernel_time`, args op_name, provider,
                input types). Precision: the kernel's input type (uint8/int8 → int8: QLinearConv,
                ConvInteger, QGemm; float → fp32).
  OpenVINO      performance counters (PERF_COUNT, i.e. ov::enable_profiling) and the request's
                get_profiling_info(): node name, layer type, exec type (`brgconv_avx512_I8`,
                `jit_avx2_FP32`: the suffix is the precision), real time; fused nodes are NOT_RUN.
  TensorRT      an IProfiler (report_layer_time per layer per run) set on the execution context;
                precision from the engine inspector when the engine carries layer details.

The runtime's node names are joined to the ONNX graph (exact name; `fused X`, `X_token_3`,
`X_nchwc`, `X/WithoutBiases`, TensorRT's `X + Y` reduced to X; else the tensor X names, when a fusion kept its last
output's name, walking up to the node of the same kind: a fused Conv+Relu named after the Relu
is the Conv), and each ONNX node to its PyTorch module (io.onnxfile.node_modules). Nodes a
runtime inserts itself (layout reorders) stay as they are, without a module.

Torch-free (runtimes never import torch). `slower_in_int8()` compares an fp32 and an int8 profile
of the same network and lists the ONNX nodes whose int8 form is slower than float: the
quantizer keeps those in float (the quantize pass's `latency_fallback`)."""

from __future__ import annotations

import json
import re
import shutil
import statistics
import tempfile
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import InputError
from edgekit.runtimes.records import LayerProfile, LayerRow, NodeTime
from edgekit.spec import InputSpec

PROFILE_VERSION = 1
QUANTIZED_TYPES = ("int8", "uint8", "int4", "uint4")
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
CONVERSIONS = ("quantize", "dequantize")  # precisions of Q/DQ kernels
_SUFFIXES = (re.compile(r"_token_\d+$"), re.compile(r"_nchwc$"), re.compile(r"_kernel_time$"))


# ----------------------------------------------------------------------------- op kinds
def op_family(op: str | None) -> str:
    """What an op computes, whatever its precision or fused form: QLinearConv, ConvInteger,
    FusedConv, Convolution → conv; QGemm, FusedGemm, MatMulInteger, FullyConnected → matmul."""
    name = (op or "").lower()
    for prefix in ("qlinear", "nhwc", "fused", "dynamicquantize", "q"):
        if name.startswith(prefix) and len(name) > len(prefix) + 2:
            name = name[len(prefix):]
            break
    name = name.replace("integer", "").replace("tofloat", "").replace("quantizedlegacy", "")
    if name.startswith(("conv", "groupconv")) or name == "convolution":
        return "conv"
    if name in ("gemm", "matmul", "fullyconnected", "fullyconnectedquantized", "innerproduct"):
        return "matmul"
    return name


def ort_precision(op: str, input_types: list[str]) -> str:
    if op == "QuantizeLinear":
        return "quantize"
    if op == "DequantizeLinear":
        return "dequantize"
    first = input_types[0] if input_types else ""
    if first in QUANTIZED_TYPES or "Integer" in op or op.startswith(("QLinear", "QGemm")):
        return "int8"
    return {"float": "fp32", "float16": "fp16", "bfloat16": "bf16", "double": "fp64"}.get(
        first, first or "?")


def openvino_precision(exec_type: str | None) -> str | None:
    """`brgconv_avx512_amx_I8` → int8, `jit_avx2_FP32` → fp32, `..._bf16` → bf16."""
    tail = (exec_type or "").rsplit("_", 1)[-1].upper()
    return {"I8": "int8", "U8": "int8", "I4": "int4", "U4": "int4", "FP32": "fp32", "F32": "fp32",
            "BF16": "bf16", "FP16": "fp16", "F16": "fp16"}.get(tail)


# ----------------------------------------------------------------------------- the join
class OnnxGraph:
    """The ONNX graph an artifact came from: node names, tensor producers, PyTorch modules."""

    def __init__(self, model: Any) -> None:
        from edgekit.io.onnxfile import node_modules

        self.nodes = {n.name: n for n in model.graph.node}
        self.producer = {o: n for n in model.graph.node for o in n.output}
        self.consumers: dict[str, list[Any]] = defaultdict(list)
        for n in model.graph.node:
            for i in n.input:
                self.consumers[i].append(n)
        self.modules = node_modules(model)
        self.inputs = {i.name for i in model.graph.input}

    @classmethod
    def load(cls, path: str | Path) -> OnnxGraph:
        from edgekit.io.onnxfile import load_onnx

        return cls(load_onnx(path, load_external=False))

    def _walk_up(self, node: Any, family: str) -> Any:
        """From a node a runtime fused into another (Relu into Conv), up to the node of
        `family` that feeds it, through single-producer ops (at most 4 steps)."""
        current = node
        for _ in range(4):
            if op_family(current.op_type) == family:
                return current
            feeders = [self.producer[i] for i in current.input if i in self.producer]
            if len(feeders) != 1:
                return node
            current = feeders[0]
        return current if op_family(current.op_type) == family else node

    def find(self, runtime_name: str, op: str | None = None) -> Any | None:
        """The ONNX node a runtime's node name stands for (None: the runtime inserted it)."""
        name = runtime_name.removeprefix("fused ").strip()
        candidates = [name]
        for pattern in _SUFFIXES:
            stripped = pattern.sub("", candidates[-1])
            if stripped != candidates[-1]:
                candidates.append(stripped)
        if " + " in name:  # TensorRT's fused layers: "node_conv2d + node_relu"
            candidates.append(name.split(" + ", 1)[0])
        if "/" in name:
            candidates.append(name.split("/", 1)[0])
        family = op_family(op) if op else None
        for candidate in candidates:
            node = self.nodes.get(candidate) or self.producer.get(candidate)
            if node is not None:
                if family and op_family(node.op_type) != family:
                    node = self._walk_up(node, family)
                return node
        return None

    def served(self, node: Any) -> Any | None:
        """The layer a Quantize/DequantizeLinear node feeds (through Q → DQ), or None."""
        current = node
        for _ in range(3):
            if current.op_type not in QDQ_OPS:
                return current
            nxt = [c for o in current.output for c in self.consumers.get(o, [])]
            if len(nxt) != 1:
                return None
            current = nxt[0]
        return None

    def join(self, rows: list[LayerRow]) -> list[LayerRow]:
        for row in rows:
            node = self.find(row["layer"], row.get("op"))
            row["onnx_node"] = node.name if node is not None else None
            row["onnx_op"] = node.op_type if node is not None else None
            row["module"] = self.modules.get(node.name) if node is not None else None
            if node is not None and node.op_type in QDQ_OPS:
                layer = self.served(node)  # a quantize kernel is part of its layer's int8 cost
                row["for_node"] = layer.name if layer is not None else None
        return rows


# ----------------------------------------------------------------------------- runtimes
def _inputs(spec: InputSpec, batch: int, images: np.ndarray | None) -> np.ndarray:
    if not spec.dynamic_batch and batch != spec.shape[0]:
        raise InputError(f"this artifact has a fixed batch of {spec.shape[0]}, not {batch}",
                         hint=f"profile it with --batch {spec.shape[0]}")
    source = images if images is not None else np.random.default_rng(0).standard_normal(
        (batch, *spec.shape[1:]), dtype=np.float32)
    return np.ascontiguousarray(np.resize(source, (batch, *spec.shape[1:])), np.float32)


def _per_run(samples: dict[str, list[float]], runs: int) -> dict[str, float]:
    """ms per run of each node: the median of its kernel times × how often it ran per run."""
    return {name: statistics.median(v) * len(v) / runs for name, v in samples.items()}


def profile_onnxruntime(path: Path, spec: InputSpec, x: np.ndarray, *, threads: int | None,
                        options: dict[str, Any], runs: int, warmup: int,
                        on_run: Callable[[], None]) -> list[LayerRow]:
    from edgekit.runtimes.ort import OrtRunner

    workdir = Path(tempfile.mkdtemp(prefix="edgekit-ort-profile-"))
    try:
        profiler = type("OrtProfiler", (OrtRunner,), {"name": "", "profile_prefix":
                                                      str(workdir / "ort")})
        with profiler(path, spec, threads=threads, options=options) as runner:
            run = runner.bind(runner.check_input(x))
            for _ in range(warmup + runs):
                run()
                on_run()
            events = json.loads(Path(runner.session.end_profiling()).read_text())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    runs_seen = sum(1 for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    samples: dict[str, list[float]] = defaultdict(list)
    info: dict[str, dict[str, Any]] = {}
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        layer = e["name"].removesuffix("_kernel_time")
        samples[layer].append(e["dur"] / 1000.0)  # µs → ms
        args = e.get("args") or {}
        if layer not in info:
            types = [next(iter(t)) for t in args.get("input_type_shape") or [] if t]
            op = args.get("op_name", "?")
            info[layer] = {"op": op, "precision": ort_precision(op, types),
                           "provider": args.get("provider")}
    per_run = _per_run(samples, max(runs_seen, 1))
    return [{"layer": name, **info[name], "ms": ms} for name, ms in per_run.items()]


def profile_openvino(path: Path, spec: InputSpec, x: np.ndarray, *, threads: int | None,
                     options: dict[str, Any], runs: int, warmup: int,
                     on_run: Callable[[], None]) -> list[LayerRow]:
    from edgekit.runtimes.openvino import OpenVinoRunner, import_openvino

    ov = import_openvino()
    profiler = type("OpenVinoProfiler", (OpenVinoRunner,), {"name": "", "profiling": True})
    with profiler(path, spec, threads=threads, options=options) as runner:
        return _openvino_layer_times(ov, runner, x, runs=runs, warmup=warmup, on_run=on_run)


def _openvino_layer_times(ov: Any, runner: Any, x: np.ndarray, *, runs: int, warmup: int,
                          on_run: Callable[[], None]) -> list[LayerRow]:
    dynamic = runner.compiled.inputs[0].get_partial_shape()[0].is_dynamic
    compiled = runner._compile(len(x)) if dynamic else runner.compiled
    request = compiled.create_infer_request()
    request.set_input_tensor(ov.Tensor(x, shared_memory=True))
    samples: dict[str, list[float]] = defaultdict(list)
    info: dict[str, dict[str, Any]] = {}
    for i in range(warmup + runs):
        request.infer()
        on_run()
        if i < warmup:
            continue
        for p in request.get_profiling_info():
            if p.status != p.Status.EXECUTED:
                continue
            samples[p.node_name].append(p.real_time.total_seconds() * 1000.0)
            info.setdefault(p.node_name, {"op": p.node_type, "exec_type": p.exec_type,
                                          "precision": openvino_precision(p.exec_type)})
    return [{"layer": name, **info[name], "ms": ms}
            for name, ms in _per_run(samples, runs).items()]


def profile_tensorrt(path: Path, spec: InputSpec, x: np.ndarray, *, threads: int | None,
                     options: dict[str, Any], runs: int, warmup: int,
                     on_run: Callable[[], None]) -> list[LayerRow]:
    """TensorRT's IProfiler: report_layer_time(layer_name, ms) per layer per enqueue; precision
    from IEngineInspector's layer information (present when the engine was built with detailed
    profiling verbosity)."""
    from edgekit.runtimes.tensorrt import TensorRtRunner, import_tensorrt

    trt = import_tensorrt()
    runner = TensorRtRunner(path, spec, threads=threads, options=options)
    samples: dict[str, list[float]] = defaultdict(list)

    class LayerTimes(trt.IProfiler):
        def __init__(self) -> None:
            trt.IProfiler.__init__(self)
            self.on = False

        def report_layer_time(self, layer_name: str, ms: float) -> None:
            if self.on:
                samples[layer_name].append(float(ms))

    profiler = LayerTimes()
    runner.context.profiler = profiler
    run = runner.bind(runner.check_input(x))
    for i in range(warmup + runs):
        profiler.on = i >= warmup
        run()
        on_run()
    precisions: dict[str, str | None] = {}
    try:
        inspector = runner.engine.create_engine_inspector()
        for i in range(runner.engine.num_layers):
            layer = json.loads(inspector.get_layer_information(i, trt.LayerInformationFormat.JSON))
            if isinstance(layer, dict) and layer.get("Name"):
                fmt = str(((layer.get("Outputs") or [{}])[0] or {}).get("Format/Datatype", ""))
                kind = (layer.get("Precision") or fmt).lower()
                precisions[layer["Name"]] = next(
                    (p for k, p in (("int8", "int8"), ("half", "fp16"), ("fp16", "fp16"),
                                    ("float", "fp32"), ("fp32", "fp32")) if k in kind), None)
    except (AttributeError, RuntimeError, ValueError):
        pass
    runner.close()
    return [{"layer": name, "op": None, "precision": precisions.get(name), "ms": ms}
            for name, ms in _per_run(samples, runs).items()]


def profiled_runtimes() -> list[str]:
    """The runtimes whose runner has a per-layer profiler (`Runner.profile_layers`)."""
    from edgekit import kinds
    from edgekit.runtimes.base import RUNNERS, runner_names

    order = kinds.runtimes()
    names = sorted(runner_names(), key=lambda n: order.index(n) if n in order else len(order))
    return [n for n in names if RUNNERS[n].has_layer_profiler()]


@dataclass(frozen=True)
class ProfileSettings:
    """How one per-layer profile runs: the runtime with its thread count and runner options
    (a device profile's), the batch size, and how many timed and warm-up runs."""

    runtime: str
    threads: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    batch: int = 1
    runs: int = 50
    warmup: int = 10


def profile(path: str | Path, spec: InputSpec, settings: ProfileSettings, *,
            onnx_source: str | Path | None, images: np.ndarray | None = None,
            on_run: Callable[[], None] | None = None) -> LayerProfile:
    """The per-layer profile of one artifact as `settings` say: {artifact, runtime, batch,
    runs, total_ms, layers: [{layer, onnx_node, module, op, precision, ms, share}]}, layers
    sorted by time. `onnx_source` is the ONNX model the artifact is (or was converted from),
    for the join to ONNX nodes and PyTorch modules; without it those columns are None."""
    from edgekit.runtimes.base import get_runner

    runtime, threads, batch = settings.runtime, settings.threads, settings.batch
    runs, warmup, options = settings.runs, settings.warmup, settings.options

    if runtime not in profiled_runtimes():
        raise InputError(f"edgekit has no per-layer profiler for {runtime!r}",
                         hint=f"profile on one of: {', '.join(profiled_runtimes())}")
    if runs < 1 or batch < 1:
        raise InputError("runs and batch must be at least 1")
    runner = get_runner(runtime)
    runner.check_available()
    x = _inputs(spec, batch, images)
    rows = runner.profile_layers(Path(path), spec, x, threads=threads, options=dict(options or {}),
                                 runs=runs, warmup=warmup, on_run=on_run or (lambda: None))
    if onnx_source is not None:
        OnnxGraph.load(onnx_source).join(rows)
    else:
        for row in rows:
            row.update(onnx_node=None, onnx_op=None, module=None)
    total = sum(r["ms"] for r in rows)
    for row in rows:
        row["share"] = row["ms"] / total if total > 0 else 0.0
    rows.sort(key=lambda r: -r["ms"])
    return {"profile_version": PROFILE_VERSION, "artifact": str(path), "runtime": runtime,
            "batch": batch, "runs": runs, "warmup": warmup, "threads": threads,
            "onnx_source": str(onnx_source) if onnx_source else None,
            "total_ms": total, "layers": rows}


# ----------------------------------------------------------------------------- comparing
def by_onnx_node(profile_: LayerProfile) -> dict[str, NodeTime]:
    """{ONNX node: {ms, precision, layers}}: a profile's time summed per ONNX node it joined to
    (several runtime layers can stand for one node, and a Quantize/DequantizeLinear kernel
    counts for the layer it feeds, `for_node`; unjoined layers are left out). The precision is
    that of the node's own kernel, not of its conversions."""
    out: dict[str, NodeTime] = {}
    for row in profile_["layers"]:
        node = row.get("for_node") or row.get("onnx_node")
        if not node:
            continue
        entry = out.setdefault(node, {"ms": 0.0, "precision": None, "module": None,
                                      "layers": []})
        entry["ms"] += row["ms"]
        entry["layers"].append(row["layer"])
        if row.get("precision") not in CONVERSIONS:
            entry["precision"] = entry["precision"] or row.get("precision")
            entry["module"] = entry["module"] or row.get("module")
    return out


def slower_in_int8(fp32_profile: LayerProfile, int8_profile: LayerProfile, *,
                   min_ratio: float = 1.0, min_ms: float = 0.0) -> list[str]:
    """ONNX node names whose int8 form ran slower than their float form on the same device:
    time of the node in the int8 profile (its quantized kernel plus the Quantize/Dequantize
    kernels the runtime ran for it, where it joined them to the node) over its time in the fp32
    profile, above `min_ratio`, and at least `min_ms` slower. Both profiles must come from the
    same network (the int8 model quantized from the fp32 one, so ONNX node names match), the
    same runtime, device and batch. Sorted by how much time keeping them float saves."""
    if fp32_profile.get("runtime") != int8_profile.get("runtime") or \
            fp32_profile.get("batch") != int8_profile.get("batch"):
        raise InputError("the fp32 and int8 profiles must come from the same runtime and batch",
                         hint="profile both models with the same --device and --batch")
    fp32, int8 = by_onnx_node(fp32_profile), by_onnx_node(int8_profile)
    slower = []
    for node, q in int8.items():
        f = fp32.get(node)
        if f is None or q.get("precision") != "int8" or f["ms"] <= 0:
            continue
        if q["ms"] > f["ms"] * min_ratio and q["ms"] - f["ms"] >= min_ms:
            slower.append((q["ms"] - f["ms"], node))
    return [node for _, node in sorted(slower, reverse=True)]
