"""Device profiles (devices/*.yaml): what a device has and how to measure on it.

Typed data as NNCF's hardware setups: runtimes with their precisions (and for ONNX Runtime the
execution providers), threads, performance hint, batch sizes, latency-protocol overrides, what to
record on a Jetson, and where the device is when it is reached over SSH."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from edgekit.config import load_yaml
from edgekit.errors import ConfigError
from edgekit.validate.latency import LatencyProtocol

PROFILE_DIRS = (Path.cwd() / "devices", Path(__file__).resolve().parent.parent / "devices")


class RuntimeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    precisions: list[Literal["fp32", "fp16", "int8"]] = ["fp32"]
    providers: list[str] = Field(default_factory=list, description="ONNX Runtime execution providers")
    options: dict[str, Any] = Field(default_factory=dict)


class JetsonRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    power_mode: bool = True
    clocks: bool = True


class DeviceProfile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = 1
    name: str
    kind: Literal["cpu", "gpu", "jetson"]
    description: str = ""
    runtimes: dict[Literal["onnxruntime", "openvino", "tensorrt", "torch"], RuntimeConfig]
    threads: int | None = Field(None, ge=1)
    performance_hint: Literal["latency", "throughput"] = "latency"
    batch_sizes: list[int] = [1]
    # (issue 15, edgekit optimize) channel counts after pruning are kept multiples of this: the
    # widths the device's kernels run fastest (8 or 16 on AVX-512/VNNI CPUs, 8 on Tensor Cores).
    round_to: int | None = Field(None, ge=1, description="prune channel counts to multiples")
    latency: LatencyProtocol = Field(default_factory=LatencyProtocol)
    record: JetsonRecord | None = None
    # Remote devices (reached over SSH).
    host: str | None = None
    port: int | None = None
    identity_file: str | None = None
    known_hosts: str | None = None
    python: str = "python3"
    workdir: str = "~/.edgekit"
    # (issue 8, edgekit.remote) how long to wait for the SSH connection, and for a whole job.
    connect_timeout: float = Field(10.0, gt=0)
    job_timeout: float = Field(3600.0, gt=0)

    @property
    def is_remote(self) -> bool:
        return self.host is not None

    def runner_options(self, runtime: str) -> dict[str, Any]:
        cfg = self.runtimes.get(runtime, RuntimeConfig())
        opts = dict(cfg.options)
        if cfg.providers:
            opts["providers"] = cfg.providers
        opts.setdefault("performance_hint", self.performance_hint)
        return opts


def find_profile(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.is_file():
        return path
    for folder in PROFILE_DIRS:
        candidate = folder / f"{name_or_path}.yaml"
        if candidate.is_file():
            return candidate
    known = ", ".join(sorted({p.stem for d in PROFILE_DIRS if d.is_dir() for p in d.glob("*.yaml")}))
    raise ConfigError(f"no device profile {name_or_path!r}", hint=f"known profiles: {known}")


def load_profile(name_or_path: str | Path) -> DeviceProfile:
    return load_yaml(DeviceProfile, find_profile(name_or_path))


def list_profiles() -> list[Path]:
    seen: dict[str, Path] = {}
    for folder in PROFILE_DIRS:
        if folder.is_dir():
            for p in sorted(folder.glob("*.yaml")):
                seen.setdefault(p.stem, p)
    return list(seen.values())


def default_cpu_profile() -> DeviceProfile:
    return load_profile("local-cpu")
