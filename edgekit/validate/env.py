"""The environment a measurement was taken in: CPU model and ISA flags, cores and threads, GPU,
library versions, Jetson power mode. Numpy-free and torch-free: it runs on any device."""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
from functools import lru_cache
from pathlib import Path

from edgekit.cpu import cpuinfo
from edgekit.io.manifest import library_versions
from edgekit.results.record import CpuInfo, Environment


def runtime_dists() -> tuple[str, ...]:
    """The distributions whose versions a record lists: numpy, onnx, and each runner's `dists`."""
    from edgekit.runtimes.base import RUNNERS, runner_names

    return tuple(dict.fromkeys(("numpy", "onnx", *(d for n in runner_names()
                                                    for d in RUNNERS[n].dists))))
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16", "asimddp", "i8mm")


def cpu_info() -> CpuInfo:
    model, flags = cpuinfo()
    return {
        "model": model or platform.processor() or platform.machine(),
        "arch": platform.machine(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "flags": {f: f in flags for f in ISA_FLAGS},
        "vnni": bool({"avx512_vnni", "avx_vnni"} & flags),
    }


def gpu_info() -> list[dict[str, str]]:
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,compute_cap,memory.total",
             "--format=csv,noheader"], capture_output=True, text=True, timeout=10, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 4:
            gpus.append(dict(zip(("name", "driver", "compute_capability", "memory"), parts, strict=True)))
    return gpus


def jetson_info() -> dict[str, str]:
    """L4T/JetPack release, nvpmodel power mode, clock state; empty off a Jetson."""
    info: dict[str, str] = {}
    release = Path("/etc/nv_tegra_release")
    if release.exists():
        info["l4t"] = release.read_text(errors="replace").splitlines()[0].strip("# ").strip()
    if shutil.which("nvpmodel"):
        try:
            info["power_mode"] = subprocess.run(["nvpmodel", "-q"], capture_output=True, text=True,
                                                timeout=10).stdout.strip()
        except (subprocess.SubprocessError, OSError):
            pass
    if shutil.which("jetson_clocks"):
        try:
            info["clocks"] = subprocess.run(["jetson_clocks", "--show"], capture_output=True,
                                            text=True, timeout=10).stdout.strip()[:2000]
        except (subprocess.SubprocessError, OSError):
            pass
    return info


@lru_cache(maxsize=1)
def capture_environment() -> Environment:
    env: Environment = {
        "hostname": socket.gethostname(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_info(),
        "gpus": gpu_info(),
        "versions": library_versions(*runtime_dists()),
    }
    jetson = jetson_info()
    if jetson:
        env["jetson"] = jetson
    return env
