"""Latency-aware int8: keep a layer in float where its int8 form runs slower than float on the
device, beside the accuracy fallback (quant/budget.py). The evidence is the runtime's own
per-layer profile (runtimes/profile.py) of the fp32 model and of the int8 model, on the same
runtime, device profile and batch; the nodes it names go to the same float-fallback list
(`exclude`: ORT's nodes_to_exclude, NNCF's ignored scope) the accuracy budget uses."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from edgekit.errors import ConfigError


class LatencyFallbackRecord(TypedDict):
    """What the manifest records of the latency fallback: the runtime, device and batch it was
    profiled on, the nodes kept float, each node's fp32 and int8 ms, and the totals."""

    runtime: str
    device: str
    batch: int
    nodes: list[str]
    times: dict[str, dict[str, float]]
    fp32_total_ms: float
    int8_total_ms: float


@dataclass
class LatencyFallback:
    """What the profiles showed: the nodes to keep float and, per node, both times (ms)."""

    runtime: str
    device: str
    batch: int
    nodes: list[str] = field(default_factory=list)
    times: dict[str, dict[str, float]] = field(default_factory=dict)
    fp32_total_ms: float = 0.0
    int8_total_ms: float = 0.0

    def reason(self, node: str) -> str:
        t = self.times.get(node) or {}
        return (f"kept in float by latency: its int8 form ran slower on {self.device} "
                f"({self.runtime}, batch {self.batch}: {t.get('int8_ms', float('nan')):.4f} ms "
                f"against {t.get('fp32_ms', float('nan')):.4f} ms in float)")

    def as_dict(self) -> LatencyFallbackRecord:
        return {"runtime": self.runtime, "device": self.device, "batch": self.batch,
                "nodes": self.nodes, "times": self.times,
                "fp32_total_ms": self.fp32_total_ms, "int8_total_ms": self.int8_total_ms}


def fp32_for_runtime(backend: Any) -> Path:
    """The fp32 model as the backend's runtime runs it, with the node names its int8 model has:
    ONNX Runtime's prepared (pre-processed) model; for OpenVINO, the fp32 IR of the ONNX model."""
    if backend.runtime == "onnxruntime":
        return Path(backend.prepared)
    from edgekit.targets.openvino import convert_onnx, save_ir

    return save_ir(convert_onnx(backend.fp32), Path(backend.workdir) / "latency-fp32.xml",
                   spec=backend.spec, precision="fp32")


def latency_fallback(backend: Any, int8_artifact: Path, device: Any, *, batch: int = 1,
                     runs: int = 50, min_ratio: float = 1.1, min_ms: float = 0.0,
                     candidates: list[str] | None = None) -> LatencyFallback:
    """Profile the backend's fp32 model and `int8_artifact` on `device` (a local DeviceProfile
    with the backend's runtime) and return the int8 nodes slower than float (runtimes.profile.
    slower_in_int8), limited to `candidates` (the quantized layers) when given."""
    from edgekit.runtimes.profile import ProfileSettings, by_onnx_node, profile, slower_in_int8

    runtime = backend.runtime
    if device.is_remote:
        raise ConfigError(f"latency_fallback measures on this machine, and {device.name} is "
                          "remote", hint="use a local device profile (edgekit optimize measures "
                          "remote devices)")
    if runtime not in device.runtimes:
        raise ConfigError(f"latency_fallback: device profile {device.name} has no {runtime}",
                          hint=f"choose a device profile that runs {runtime}")
    settings = ProfileSettings(runtime, threads=device.threads,
                               options=device.runner_options(runtime), batch=batch, runs=runs)
    source = backend.fp32 if runtime == "openvino" else None
    fp32_model = fp32_for_runtime(backend)
    fp32 = profile(fp32_model, backend.spec, settings, onnx_source=source or fp32_model)
    int8 = profile(int8_artifact, backend.spec, settings, onnx_source=source or int8_artifact)
    nodes = slower_in_int8(fp32, int8, min_ratio=min_ratio, min_ms=min_ms)
    if candidates is not None:
        nodes = [n for n in nodes if n in set(candidates)]
    f, q = by_onnx_node(fp32), by_onnx_node(int8)
    return LatencyFallback(runtime, device.name, batch, nodes,
                           {n: {"fp32_ms": f[n]["ms"], "int8_ms": q[n]["ms"]} for n in nodes},
                           fp32["total_ms"], int8["total_ms"])
