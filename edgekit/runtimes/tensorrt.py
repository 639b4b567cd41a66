"""TensorRT runner and the engine metadata that guards it. Never imports torch.

A TensorRT engine only runs on the GPU model and TensorRT version it was built with. Every engine
edgekit builds has a metadata file beside it (`<engine>.json`: TensorRT version, GPU name,
compute capability, precision, input profile, InputSpec); loading an engine whose metadata does
not match this machine, or that has none, is an error that says to rebuild it here.

Buffers and streams come from cuda-python (`cuda.bindings.runtime`, or the older `cuda.cudart`):
pinned host buffers and device buffers sized for the profile's largest batch, allocated once.
Timing (stated in every record): p50_ms etc. are END-TO-END host times per query: host-to-device
copy of the input from pinned memory, execute_async_v3, device-to-host copy of the output into
pinned memory, stream synchronisation. `device_latency` holds CUDA-event time around
execute_async_v3 alone, read after the synchronisation, outside the host-timed span.

Written against the documented TensorRT 10 Python API; TensorRT cannot be installed on the
development and CI machines, so the parts that need it are tested only where it is (tests
marked `tensorrt`).
"""

from __future__ import annotations

import ctypes
import datetime as _dt
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import InputError, MissingDependencyError, ModelLoadError
from edgekit.io.specfiles import metadata_path, spec_from_engine_metadata  # noqa: F401 - re-exported
from edgekit.runtimes.base import DeviceBuild, DeviceTimed, Runner
from edgekit.runtimes.records import EngineMetadata, InputProfile, MachineInfo, RuntimeDetails
from edgekit.spec import InputSpec

ENGINE_META_FORMAT = "edgekit.tensorrt-engine/1"
INSTALL_HINT = "pip install edgekit[tensorrt] (TensorRT and cuda-python; an NVIDIA GPU is needed)"
# What must match between the machine that built an engine and the one that loads it.
MATCH_KEYS = ("tensorrt_version", "gpu_name", "compute_capability")


class EngineMismatchError(InputError):
    """A TensorRT engine built for another GPU or TensorRT version (engines are not portable)."""


# ---------------------------------------------------------------- metadata (no TensorRT needed)
def engine_metadata(machine: MachineInfo, *, precision: str, input_profile: InputProfile,
                    spec: InputSpec | None, **extra: Any) -> EngineMetadata:
    """The metadata record written beside an engine: the machine it was built on (MATCH_KEYS),
    its precision and input profile, the InputSpec and whatever build settings `extra` holds."""
    missing = [k for k in MATCH_KEYS if not machine.get(k)]
    if missing:
        raise ValueError(f"machine description lacks {missing}")
    return {"format": ENGINE_META_FORMAT, **{k: str(machine[k]) for k in MATCH_KEYS},
            "precision": precision, "input_profile": input_profile,
            "input_spec": spec.model_dump(mode="json") if spec is not None else None,
            "built": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), **extra}


def write_engine_metadata(engine: str | Path, meta: EngineMetadata) -> Path:
    from edgekit.io.files import atomic_write_json

    path = metadata_path(engine)
    atomic_write_json(path, meta)
    return path


def read_engine_metadata(engine: str | Path) -> EngineMetadata:
    engine = Path(engine)
    path = metadata_path(engine)
    if not path.is_file():
        raise EngineMismatchError(
            f"TensorRT engine {engine.name} has no metadata file ({path.name}), so edgekit cannot "
            "tell which GPU and TensorRT version it was built for",
            hint=rebuild_hint(engine, None))
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, OSError) as exc:
        raise EngineMismatchError(f"{path} is not readable JSON ({exc})",
                                  hint=rebuild_hint(engine, None)) from None
    if not isinstance(meta, dict) or meta.get("format") != ENGINE_META_FORMAT:
        raise EngineMismatchError(f"{path} is not an edgekit engine metadata file",
                                  hint=rebuild_hint(engine, None))
    return meta


def rebuild_hint(engine: str | Path, precision: str | None) -> str:
    folder = Path(engine).parent
    return ("engines are not portable: rebuild on this device with edgekit export "
            f"{folder}/ --target tensorrt --precision {precision or 'fp16'}")


def check_engine_metadata(meta: EngineMetadata, machine: MachineInfo,
                          engine: str | Path = "model.plan") -> None:
    """Raise EngineMismatchError naming every field in which the engine's build machine differs
    from `machine` (TensorRT version, GPU name, compute capability)."""
    diffs = [f"{k.replace('_', ' ')} {meta.get(k)!s} vs {machine.get(k)!s} here"
             for k in MATCH_KEYS if str(meta.get(k)) != str(machine.get(k))]
    if diffs:
        raise EngineMismatchError(
            f"TensorRT engine {Path(engine).name} was built for another machine: "
            + "; ".join(diffs), hint=rebuild_hint(engine, meta.get("precision")))


# ---------------------------------------------------------------- libraries and the GPU
def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise MissingDependencyError("TensorRT is not installed", hint=INSTALL_HINT) from None
    return trt


def import_cudart():
    """cuda-python's runtime API module (new layout first, then the pre-12.8 one)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # type: ignore[no-redef]
        except ImportError:
            raise MissingDependencyError("cuda-python is not installed (TensorRT's buffers and "
                                         "streams need it)", hint=INSTALL_HINT) from None
    return cudart


def cuda_call(cudart, result: Any) -> Any:
    """Unpack cuda-python's (error, *values) result; a CUDA error raises RuntimeError."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        name = cudart.cudaGetErrorName(err)[1]
        raise RuntimeError(f"CUDA error {name.decode() if isinstance(name, bytes) else name}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def require_gpu(cudart, device: int = 0) -> None:
    try:
        count = cuda_call(cudart, cudart.cudaGetDeviceCount())
    except RuntimeError as exc:
        count, why = 0, str(exc)
    else:
        why = f"{count} CUDA device(s) visible"
    if count <= device:
        raise MissingDependencyError(
            f"TensorRT needs an NVIDIA GPU, and none is usable here ({why})",
            hint="build and run TensorRT engines on the GPU machine or Jetson that runs them")


def machine_info(trt=None, cudart=None, device: int = 0) -> MachineInfo:
    """This machine as engine metadata sees it: TensorRT version, GPU name, compute capability."""
    trt = trt or import_tensorrt()
    cudart = cudart or import_cudart()
    require_gpu(cudart, device)
    prop = cuda_call(cudart, cudart.cudaGetDeviceProperties(device))
    name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
    return {"tensorrt_version": trt.__version__, "gpu_name": name.rstrip("\x00").strip(),
            "compute_capability": f"{prop.major}.{prop.minor}", "gpu_index": device}


# ---------------------------------------------------------------- runner
class _Buffer:
    """A pinned host buffer and a device buffer of the same size, freed on close()."""

    def __init__(self, cudart, nbytes: int, dtype: np.dtype) -> None:
        self.cudart, self.nbytes, self.dtype = cudart, nbytes, np.dtype(dtype)
        self.host_ptr = cuda_call(cudart, cudart.cudaMallocHost(nbytes))
        self.device_ptr = cuda_call(cudart, cudart.cudaMalloc(nbytes))
        raw = (ctypes.c_byte * nbytes).from_address(int(self.host_ptr))
        self.host = np.frombuffer(raw, dtype=self.dtype)

    def close(self) -> None:
        if self.device_ptr is not None:
            self.cudart.cudaFree(self.device_ptr)
            self.cudart.cudaFreeHost(self.host_ptr)
            self.device_ptr = self.host_ptr = None


class TensorRtRunner(DeviceTimed, Runner):
    name = "tensorrt"
    package = "tensorrt"
    install_hint = INSTALL_HINT
    dists = ("tensorrt",)
    short = "TRT"
    colour = "#2ca02c"
    # engines are built on the device (optimize sends the folder to build from); ONNX Runtime
    # validates the folder's fp32 model there on the way
    device_build = DeviceBuild(
        title="TensorRT", companions=("onnxruntime",),
        needs="TensorRT needs its Python bindings, cuda-python and a visible GPU there",
        report_words=("gpu", "cuda"), unusable="not installed, or no GPU")

    timing_scope = ("end-to-end host time per query: host-to-device copy of the input from pinned "
                    "memory, execute_async_v3, device-to-host copy of the output into pinned "
                    "memory, stream synchronisation")
    device_timing_scope = ("CUDA events around execute_async_v3 alone (no copies), read after "
                           "synchronisation")

    @classmethod
    def profile_layers(cls, path, spec, x, **kw):  # type: ignore[no-untyped-def]
        from edgekit.runtimes.profile import profile_tensorrt

        return profile_tensorrt(path, spec, x, **kw)

    @classmethod
    def available(cls) -> tuple[bool, str]:
        if importlib.util.find_spec("tensorrt") is None:
            return False, f"tensorrt is not installed ({INSTALL_HINT})"
        if importlib.util.find_spec("cuda") is None:
            return False, f"cuda-python is not installed ({INSTALL_HINT})"
        return True, ""

    def load(self) -> None:
        trt = import_tensorrt()
        cudart = self.cudart = import_cudart()
        if not self.artifact.is_file() or self.artifact.stat().st_size == 0:
            raise ModelLoadError(f"TensorRT engine {self.artifact} is missing or empty",
                                 hint="check the path")
        self.meta = read_engine_metadata(self.artifact)
        self.machine = machine_info(trt, cudart)
        check_engine_metadata(self.meta, self.machine, self.artifact)
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        if self.meta.get("dla_core") is not None:
            self.runtime.DLA_core = int(self.meta["dla_core"])
        self.engine = self.runtime.deserialize_cuda_engine(self.artifact.read_bytes())
        if self.engine is None:
            raise ModelLoadError(f"TensorRT could not deserialise {self.artifact.name}",
                                 hint=rebuild_hint(self.artifact, self.meta.get("precision")))
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelLoadError(f"{self.artifact.name} has inputs {inputs} and outputs "
                                 f"{outputs}; edgekit runs one-input, one-output classifiers")
        self.input_name, self.output_name = inputs[0], outputs[0]
        shape = tuple(self.engine.get_tensor_shape(self.input_name))
        if -1 in shape:
            self.max_shape = tuple(self.engine.get_tensor_profile_shape(self.input_name, 0)[2])
        else:
            self.max_shape = shape
        self.max_batch = int(self.max_shape[0])
        self.context.set_input_shape(self.input_name, self.max_shape)
        out_max = tuple(self.context.get_tensor_shape(self.output_name))
        in_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.input_name)))
        out_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.output_name)))
        self.inp = _Buffer(cudart, int(np.prod(self.max_shape)) * in_dtype.itemsize, in_dtype)
        self.out = _Buffer(cudart, int(np.prod(out_max)) * out_dtype.itemsize, out_dtype)
        self.context.set_tensor_address(self.input_name, int(self.inp.device_ptr))
        self.context.set_tensor_address(self.output_name, int(self.out.device_ptr))
        self.stream = cuda_call(cudart, cudart.cudaStreamCreate())
        self.start = cuda_call(cudart, cudart.cudaEventCreate())
        self.end = cuda_call(cudart, cudart.cudaEventCreate())

    def _stage(self, x: np.ndarray) -> tuple[int, ...]:
        """Copy x into the pinned input buffer and set the input shape; returns output shape."""
        n = int(np.prod(x.shape))
        self.inp.host[:n] = x.astype(self.inp.dtype, copy=False).ravel()
        if not self.context.set_input_shape(self.input_name, tuple(x.shape)):
            raise InputError(f"input shape {tuple(x.shape)} is outside the engine's profile "
                             f"(max {self.max_shape})",
                             hint="rebuild the engine with a larger max batch")
        return tuple(self.context.get_tensor_shape(self.output_name))

    def _enqueue(self, in_bytes: int, out_bytes: int, timed: bool = False) -> None:
        cudart, stream = self.cudart, self.stream
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        cuda_call(cudart, cudart.cudaMemcpyAsync(self.inp.device_ptr, self.inp.host_ptr, in_bytes,
                                                 h2d, stream))
        if timed:
            cuda_call(cudart, cudart.cudaEventRecord(self.start, stream))
        if not self.context.execute_async_v3(int(stream)):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        if timed:
            cuda_call(cudart, cudart.cudaEventRecord(self.end, stream))
        cuda_call(cudart, cudart.cudaMemcpyAsync(self.out.host_ptr, self.out.device_ptr, out_bytes,
                                                 d2h, stream))
        cuda_call(cudart, cudart.cudaStreamSynchronize(stream))

    def infer_impl(self, x: np.ndarray) -> np.ndarray:
        outs = []
        for i in range(0, len(x), self.max_batch):
            chunk = x[i : i + self.max_batch]
            out_shape = self._stage(chunk)
            out_n = int(np.prod(out_shape))
            self._enqueue(chunk.size * self.inp.dtype.itemsize, out_n * self.out.dtype.itemsize)
            outs.append(self.out.host[:out_n].reshape(out_shape).astype(np.float32))
        return np.concatenate(outs)

    def bind(self, x: np.ndarray) -> Callable[[], Any]:
        if len(x) > self.max_batch:
            raise InputError(f"batch {len(x)} is larger than the engine's profile allows "
                             f"({self.max_batch})", hint="rebuild with a larger max batch")
        out_shape = self._stage(x)
        in_bytes = x.size * self.inp.dtype.itemsize
        out_bytes = int(np.prod(out_shape)) * self.out.dtype.itemsize
        cudart = self.cudart
        self._read_device_ms = lambda: cuda_call(
            cudart, cudart.cudaEventElapsedTime(self.start, self.end))
        return lambda: self._enqueue(in_bytes, out_bytes, timed=True)

    def nvidia_gpu(self) -> int | None:
        return 0  # engines are built and run on CUDA device 0

    def describe(self) -> RuntimeDetails:
        return {"runtime": self.name, "version": self.machine["tensorrt_version"],
                "gpu": self.machine["gpu_name"],
                "compute_capability": self.machine["compute_capability"],
                "precision": self.meta.get("precision"), "dla_core": self.meta.get("dla_core"),
                "input_profile": self.meta.get("input_profile"), "threads": self.threads}

    def free(self) -> None:
        for buf in (getattr(self, "inp", None), getattr(self, "out", None)):
            if buf is not None:
                buf.close()
        if getattr(self, "stream", None) is not None:
            self.cudart.cudaStreamDestroy(self.stream)
            self.stream = None
        for event in ("start", "end"):
            if getattr(self, event, None) is not None:
                self.cudart.cudaEventDestroy(getattr(self, event))
                setattr(self, event, None)
        self.context = self.engine = None  # the execution context before its engine

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown; nothing to report to
            pass
