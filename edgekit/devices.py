"""Device profiles (devices/*.yaml): what a device has and how to measure on it.

Typed data as NNCF's hardware setups: runtimes with their precisions (and for ONNX Runtime the
execution providers), threads, performance hint, batch sizes, latency-protocol overrides, what to
record on a Jetson, and where the device is when it is reached over SSH."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from edgekit import kinds
from edgekit.config import load_yaml
from edgekit.errors import ConfigError, shown
from edgekit.resources import shipped_dir
from edgekit.runtimes.latency import LatencyProtocol

SHIPPED_PROFILES = shipped_dir("devices")  # package data (edgekit/_data/devices)


# (issue 25) a device's name becomes a folder name (`optimize -o OUT` writes OUT/<device>/): letters,
# digits, '.', '_' and '-', never '..' and never a path separator.
DEVICE_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


def check_device_name(name: str, what: str = "device name") -> str:
    """`name` when it is a safe device name (see DEVICE_NAME), else ConfigError (exit 2)."""
    if not isinstance(name, str) or not DEVICE_NAME.match(name) or ".." in name \
            or name.strip(".") == "":
        raise ConfigError(f"{what} {name!r} is not a plain device name: device names become "
                          "folder names, so they may hold only letters, digits, '.', '_' and "
                          "'-', and never '..' or a path separator",
                          hint="rename the device, e.g. `name: orin-1`")
    return name


def profile_dirs(cwd: str | Path | None = None) -> tuple[Path, ...]:
    """Where profiles are looked up, first hit wins: devices/ under `cwd` (by default the
    working directory at the time of the call, not of the import), then the shipped ones."""
    return (Path.cwd() if cwd is None else Path(cwd)) / "devices", SHIPPED_PROFILES


class RuntimeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    precisions: list[Literal[kinds.PRECISIONS]] = ["fp32"]  # type: ignore[valid-type]
    providers: list[str] = Field(default_factory=list, description="ONNX Runtime execution providers")
    options: dict[str, Any] = Field(default_factory=dict)


class JetsonRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    power_mode: bool = True
    clocks: bool = True


class DeviceProfile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    _path: Path | None = PrivateAttr(None)  # the file it was loaded from (load_profile)

    schema_version: int = 1
    name: str
    kind: Literal["cpu", "gpu", "jetson"]
    description: str = ""
    runtimes: dict[str, RuntimeConfig]  # names: edgekit.kinds.runtimes() (checked below)
    threads: int | None = Field(None, ge=1)
    performance_hint: Literal["latency", "throughput"] = "latency"
    batch_sizes: list[int] = [1]
    # (issue 15, edgekit optimize) channel counts after pruning are kept multiples of this: the
    # widths the device's kernels run fastest (8 or 16 on AVX-512/VNNI CPUs, 8 on Tensor Cores).
    round_to: int | None = Field(None, ge=1, description="prune channel counts to multiples")
    latency: LatencyProtocol = Field(default_factory=LatencyProtocol)
    record: JetsonRecord | None = None
    # (issue 20) an emulated device (qemu-user): its top-1 is real, its latency is the
    # emulator's; every record says so, and tables never mix it with real devices unmarked.
    emulated: bool = False
    # (issue 20) the highest ONNX opset (ai.onnx) this device's runtime loads; None: read it from
    # the device's onnxruntime in the device check. An artifact above it is refused before copying.
    max_opset: int | None = Field(None, ge=1)
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

    @field_validator("name")
    @classmethod
    def _check_name(cls, name: str) -> str:
        """A name that would leave the output folder as a path is refused when the profile
        loads (ConfigError passes through pydantic; config.validate adds the file)."""
        return check_device_name(name, "name")

    @field_validator("runtimes")
    @classmethod
    def _check_runtime_names(cls, value: dict[str, RuntimeConfig]) -> dict[str, RuntimeConfig]:
        """Runtime names from the registry (the table of kinds and every registered Runner)."""
        from edgekit.registry import suggest
        from edgekit.runtimes.base import runner_names

        known = list(dict.fromkeys((*kinds.runtimes(), *runner_names())))
        for name in value:
            if name not in known:
                raise ConfigError(f"runtimes.{name}: unknown runtime {shown(name)}",
                                  hint=suggest(name, known))
        return value

    @model_validator(mode="after")
    def _check_runner_options(self) -> DeviceProfile:
        """Each runtime's options against its runner's Options schema, when the profile is
        loaded: a typo (`allow_cpu_fallbak`) is an error naming the key, not a silent default.
        (Raises ConfigError, which pydantic passes through; config.validate adds the file.)"""
        from edgekit.runtimes.base import get_runner

        for name in self.runtimes:
            get_runner(name).parse_options(self.runner_options(name), f"runtimes.{name}.options")
        return self

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


def find_profile(name_or_path: str | Path, *, cwd: str | Path | None = None) -> Path:
    if not isinstance(name_or_path, str | Path):
        raise ConfigError(f"device {shown(name_or_path)} is not a profile name or a path",
                          hint="give a profile name (local-cpu), a YAML path or a DeviceProfile")
    path = Path(name_or_path)
    if path.is_file():
        return path
    folders = profile_dirs(cwd)
    for folder in folders:
        candidate = folder / f"{name_or_path}.yaml"
        if candidate.is_file():
            return candidate
    known = ", ".join(sorted({p.stem for d in folders if d.is_dir() for p in d.glob("*.yaml")}))
    raise ConfigError(f"no device profile {shown(name_or_path)}", hint=f"known profiles: {known}")


def load_profile(name_or_path: str | Path, *, cwd: str | Path | None = None) -> DeviceProfile:
    path = find_profile(name_or_path, cwd=cwd)
    profile = load_yaml(DeviceProfile, path)
    profile._path = Path(path)
    return profile


def profile_ref(profile: DeviceProfile) -> str:
    """What `load_profile` finds this profile by again: its file if it came from one."""
    return str(profile._path) if profile._path else profile.name


def list_profiles(*, cwd: str | Path | None = None) -> list[Path]:
    seen: dict[str, Path] = {}
    for folder in profile_dirs(cwd):
        if folder.is_dir():
            for p in sorted(folder.glob("*.yaml")):
                if not p.stem.startswith("fleet-"):  # fleet files (edgekit/fleetfile.py)
                    seen.setdefault(p.stem, p)
    return list(seen.values())


def default_cpu_profile() -> DeviceProfile:
    return load_profile("local-cpu")
