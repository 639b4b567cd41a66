"""OpenVINO runner: one compiled model, a reused infer request, the device profile's thread count
(INFERENCE_NUM_THREADS) and performance hint (PERFORMANCE_HINT).

Execution precision: OpenVINO's CPU plugin runs fp32 IRs in bf16 by default on CPUs with bf16
units (AVX512_BF16, AMX). An IR exported as fp32 is therefore compiled with
INFERENCE_PRECISION_HINT=f32, so that "fp32" means fp32; fp16 and int8 IRs run at the device's
default. A profile can set `inference_precision` (f32 | bf16 | f16) in the runtime's options.
What was used is reported by describe().

Timing: for a model with a dynamic batch, the timing loop compiles a static-shape copy for the
batch measured (as benchmark_app does), and times `infer()` on an infer request whose input
tensor wraps the preallocated host array (no copy). Never imports torch.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from edgekit.errors import InputError, MissingDependencyError, ModelLoadError
from edgekit.io.specfiles import read_ir_rt_info, spec_from_ir  # noqa: F401 - spec_from_ir re-exported
from edgekit.runtimes.base import Runner, RunnerOptions
from edgekit.runtimes.records import RuntimeDetails

INSTALL_HINT = "pip install edgekit[openvino] (or pip install openvino)"
PRECISION_HINTS = {"f32": "f32", "fp32": "f32", "bf16": "bf16", "f16": "f16", "fp16": "f16"}
_DATA_TAG = re.compile(rb"<data\b[^>]*\boffset=\"(\d+)\"[^>]*\bsize=\"(\d+)\"")


def import_openvino():
    try:
        import openvino as ov
    except ImportError:
        raise MissingDependencyError("OpenVINO is not installed", hint=INSTALL_HINT) from None
    return ov


_CORE: list[Any] = []


def shared_core() -> Any:
    """The one ov.Core of this process; every IR edgekit reads or compiles goes through it.

    Why one: each Core loads its own instance of the CPU plugin, and each instance installs a
    signal stack (sigaltstack) on the thread that created it and, when destroyed, restores the
    stack it found only if its own is still current, then unmaps its own. Two instances destroyed
    out of order (A, B created; A freed, then B) leave the thread's signal stack pointing at A's
    unmapped memory; the next signal handled there (a Python handler such as torch DataLoader's
    SIGCHLD handler, run when any child process exits) then kills the process with SIGSEGV, or
    writes its frame over whatever reuses those pages. One Core, never freed, loads the plugin
    once (OpenVINO 2026.4, intel_cpu/src/sigstack_manager.cpp; tests/unit/test_data_workers.py)."""
    if not _CORE:
        _CORE.append(import_openvino().Core())
    return _CORE[0]


def ir_weights_path(xml_path: str | Path) -> Path:
    """The .bin that OpenVINO reads beside an .xml (same stem)."""
    return Path(xml_path).with_suffix(".bin")


def check_ir_files(xml_path: str | Path) -> Path:
    """An IR is an .xml and a .bin. A missing, empty or truncated .bin is an InputError that says
    which, before OpenVINO reports it less clearly. Returns the .bin path."""
    xml_path = Path(xml_path)
    if not xml_path.is_file() or xml_path.stat().st_size == 0:
        raise ModelLoadError(f"OpenVINO IR {xml_path} is missing or empty", hint="check the path")
    weights = ir_weights_path(xml_path)
    text = xml_path.read_bytes()
    needed = max((int(o) + int(s) for o, s in _DATA_TAG.findall(text)), default=0)
    if not weights.is_file():
        if needed:
            raise ModelLoadError(f"the weights of {xml_path.name} are missing: {weights.name} "
                                 "is not beside it",
                                 hint="copy the .bin next to the .xml, or export again")
        return weights
    have = weights.stat().st_size
    if have < needed:
        raise ModelLoadError(f"{weights.name} is truncated: {have} bytes, the IR needs {needed}",
                             hint="copy it again or export again with edgekit export "
                             "--target openvino")
    return weights


def _config(precision_hint: str | None, threads: int | None, hint: str | None) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if hint:
        config["PERFORMANCE_HINT"] = hint.upper()
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    if precision_hint:
        if precision_hint not in PRECISION_HINTS:
            raise InputError(f"unknown OpenVINO inference precision {precision_hint!r}",
                             hint=f"choose one of: {', '.join(sorted(set(PRECISION_HINTS)))}")
        config["INFERENCE_PRECISION_HINT"] = PRECISION_HINTS[precision_hint]
    return config


def compile_ir(xml_path: str | Path, *, device: str = "CPU", threads: int | None = None,
               performance_hint: str | None = "latency", inference_precision: str | None = None,
               batch: int | None = None, profiling: bool = False):
    """Read (with the .bin checks) and compile an IR; `batch` fixes a dynamic batch dimension;
    `profiling` turns on the per-node performance counters (ov::enable_profiling). An fp32 .onnx
    file is read by OpenVINO's ONNX frontend directly, as converting it to an IR would (the
    validator times the fp32 original on OpenVINO this way)."""
    core = shared_core()
    if Path(xml_path).suffix != ".onnx":
        check_ir_files(xml_path)
    try:
        model = core.read_model(str(xml_path))
    except RuntimeError as exc:
        raise ModelLoadError(f"OpenVINO cannot read {xml_path}: {str(exc).strip().splitlines()[-1]}",
                             hint="export it again with edgekit export --target openvino") from None
    if batch is not None and model.inputs[0].get_partial_shape()[0].is_dynamic:
        shape = model.inputs[0].get_partial_shape()
        shape[0] = batch
        model.reshape({model.inputs[0]: shape})
    if device not in core.available_devices and not device.startswith(("AUTO", "HETERO", "MULTI")):
        raise MissingDependencyError(
            f"OpenVINO device {device!r} is not available here (have {core.available_devices})",
            hint="set options.device in the device profile to one of those")
    config = _config(inference_precision, threads, performance_hint)
    if profiling:
        config["PERF_COUNT"] = True
    return core.compile_model(model, device, config)


def default_precision_hint(xml_path: str | Path) -> str | None:
    """f32 for an IR exported as fp32 (see module docstring) or an fp32 ONNX model read
    directly; None (device default) otherwise."""
    if Path(xml_path).suffix == ".onnx":
        return "f32"
    return "f32" if read_ir_rt_info(xml_path).get("precision", "fp32") == "fp32" else None


def openvino_logits(xml_path: str | Path, x: np.ndarray, *, batch: int = 64,
                    inference_precision: str | None = None) -> tuple[np.ndarray, str]:
    """Logits of an IR on CPU for all of x, and the inference precision it ran at."""
    compiled = compile_ir(xml_path, inference_precision=inference_precision)
    request = compiled.create_infer_request()
    outs = [np.array(request.infer({0: np.ascontiguousarray(x[i : i + batch])})[0])
            for i in range(0, len(x), batch)]
    return np.concatenate(outs), _plain(compiled.get_property("INFERENCE_PRECISION_HINT"))


def _plain(value: Any) -> Any:
    """OpenVINO property values as JSON-ready values (ov.Type -> 'f32', enums -> names)."""
    if hasattr(value, "to_string"):
        return value.to_string()
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return getattr(value, "name", None) or str(value)


class OpenVinoOptions(RunnerOptions):
    device: str = Field("CPU", description="OpenVINO device: CPU, GPU, NPU, AUTO, ...")
    performance_hint: Literal["latency", "throughput"] | None = "latency"
    inference_precision: str | None = Field(None, description=(
        "f32 | bf16 | f16; by default f32 for fp32 IRs, the plugin's choice otherwise"))


class OpenVinoRunner(Runner):
    name = "openvino"
    package = "openvino"
    install_hint = INSTALL_HINT
    dists = ("openvino", "nncf")
    short = "OV"
    colour = "#6a3d9a"
    reads_onnx = True  # its ONNX frontend reads an fp32 .onnx at f32 (an fp32 IR export of it)

    timing_scope = ("infer request on host (reused; static-shape compile for the batch timed), "
                    "input wrapped from preallocated host memory, output left in OpenVINO's "
                    "buffer")
    Options = OpenVinoOptions
    options: OpenVinoOptions

    @classmethod
    def profile_layers(cls, path, spec, x, **kw):  # type: ignore[no-untyped-def]
        from edgekit.runtimes.profile import profile_openvino

        return profile_openvino(path, spec, x, **kw)

    def load(self) -> None:
        import_openvino()
        self.device = self.options.device
        self.performance_hint = self.options.performance_hint
        chosen = self.options.inference_precision
        self.precision_hint = chosen if chosen is not None else \
            default_precision_hint(self.artifact)
        self.compiled = self._compile(None)
        self.request = self.compiled.create_infer_request()
        self._static: dict[int, Any] = {}

    def free(self) -> None:
        # the infer requests before the compiled models they came from
        self.request = self._bound_input = None
        self._static = {}
        self.compiled = None

    profiling: ClassVar[bool] = False  # runtimes/profile.py: compile with performance counters

    def _compile(self, batch: int | None):
        return compile_ir(self.artifact, device=self.device, threads=self.threads,
                          performance_hint=self.performance_hint,
                          inference_precision=self.precision_hint, batch=batch,
                          profiling=self.profiling)

    def infer_impl(self, x: np.ndarray) -> np.ndarray:
        return np.array(self.request.infer({0: x})[0])

    def bind(self, x: np.ndarray) -> Callable[[], Any]:
        ov = import_openvino()
        compiled = self.compiled
        if self.spec.dynamic_batch and self.compiled.inputs[0].get_partial_shape()[0].is_dynamic:
            if len(x) not in self._static:
                self._static[len(x)] = self._compile(len(x))
            compiled = self._static[len(x)]
        request = compiled.create_infer_request()
        request.set_input_tensor(ov.Tensor(x, shared_memory=True))
        self._bound_input = x  # keep the host array alive while the tensor wraps it
        return request.infer

    def describe(self) -> RuntimeDetails:
        ov = import_openvino()

        def prop(name: str) -> Any:
            try:
                return _plain(self.compiled.get_property(name))
            except RuntimeError:
                return None

        return {"runtime": self.name, "version": ov.get_version(), "device": self.device,
                "execution_devices": prop("EXECUTION_DEVICES"),
                "threads": prop("INFERENCE_NUM_THREADS") or self.threads,
                "performance_hint": prop("PERFORMANCE_HINT"),
                "inference_precision": prop("INFERENCE_PRECISION_HINT"),
                "num_streams": prop("NUM_STREAMS")}
