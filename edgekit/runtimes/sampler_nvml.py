"""NVML beside the timed window (runtimes/sampler.py's NVIDIA source): SM clock, temperature,
power and clock-event ("throttle") reasons on every tick, the total-energy counter at both ends.
nvidia-ml-py (`pynvml`) is imported only when a runner is on an NVIDIA GPU."""

from __future__ import annotations

import os
import time
from typing import Any

from edgekit.runtimes.records import EnergyWindow, NvmlSummary
from edgekit.runtimes.sampler import Source, min_max_mean, sampled_energy

_COUNTER_PERIOD: dict[int, float | None] = {}  # per GPU: the energy counter's update period

# NVML clock-event ("throttle") reasons: bit → name (nvml.h nvmlClocksEventReason*).
NVML_REASONS = {
    0x1: "gpu_idle", 0x2: "applications_clocks_setting", 0x4: "sw_power_cap",
    0x8: "hw_slowdown", 0x10: "sync_boost", 0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown", 0x80: "hw_power_brake_slowdown", 0x100: "display_clock_setting",
}


def nvml_reason_names(mask: int) -> list[str]:
    names = [name for bit, name in NVML_REASONS.items() if mask & bit]
    rest = mask & ~sum(NVML_REASONS)
    return names + ([f"unknown_0x{rest:x}"] if rest else [])


def nvml_index(cuda_index: int) -> int:
    """The NVML index of CUDA device `cuda_index` when CUDA_VISIBLE_DEVICES renumbers devices
    with plain indices (UUIDs or MIG ids are not mapped: the CUDA index is used)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
    if 0 <= cuda_index < len(visible) and visible[cuda_index].strip().isdigit():
        return int(visible[cuda_index])
    return cuda_index


class NvmlSource(Source):
    """SM clock, temperature, power and clock-event reasons on every tick; the total-energy
    counter (mJ since the driver loaded; Volta and newer) at both ends of the window."""

    name = "nvml"

    def __init__(self, gpu_index: int) -> None:
        self.gpu_index = gpu_index
        self.nvml: Any = None
        self.handle: Any = None
        self.samples: list[dict[str, Any]] = []
        self.energy: list[tuple[float, float]] = []
        self.energy_error: str | None = None
        self.reasons = 0

    def available(self) -> tuple[bool, str]:
        try:
            import pynvml
        except ImportError:
            return False, ("NVIDIA GPU clocks, power and energy (nvidia-ml-py is not installed: "
                           "pip install 'edgekit[gpu]')")
        try:
            pynvml.nvmlInit()
        except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
            return False, f"NVIDIA GPU clocks, power and energy (NVML: {exc})"
        self.nvml = pynvml
        return True, ""

    def open(self) -> None:
        self.handle = self.nvml.nvmlDeviceGetHandleByIndex(nvml_index(self.gpu_index))
        self.name_ = self.nvml.nvmlDeviceGetName(self.handle)
        self.update_s = _COUNTER_PERIOD.get(self.gpu_index)
        if self.update_s is None:
            self.update_s = _COUNTER_PERIOD[self.gpu_index] = self._probe_counter_period()

    def _probe_counter_period(self, limit_s: float = 0.3) -> float | None:
        """How often the driver updates the energy counter (NVML does not say): poll it for up
        to `limit_s` before warm-up and take the median time between changes; `limit_s` bounds
        it when fewer than two changes are seen. None when the GPU has no counter."""
        read = self.nvml.nvmlDeviceGetTotalEnergyConsumption
        try:
            last, changes = read(self.handle), []
        except self.nvml.NVMLError:
            return None
        start = time.perf_counter()
        while time.perf_counter() - start < limit_s:
            value = read(self.handle)
            if value != last:
                changes.append(time.perf_counter())
                last = value
            time.sleep(0.0005)
        gaps = sorted(b - a for a, b in zip(changes, changes[1:], strict=False))
        return gaps[len(gaps) // 2] if gaps else limit_s

    def _energy(self, now: float) -> None:
        if self.energy_error is None:
            try:
                self.energy.append((now, float(
                    self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))))
            except self.nvml.NVMLError as exc:  # NotSupported before Volta
                self.energy_error = str(exc)

    def begin(self, now: float) -> None:
        self._energy(now)
        self.tick(now)

    def end(self, now: float) -> None:
        self.tick(now)
        self._energy(now)

    def tick(self, now: float) -> None:
        n, h = self.nvml, self.handle
        get_reasons = getattr(n, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
            n.nvmlDeviceGetCurrentClocksThrottleReasons
        sample: dict[str, Any] = {"t": now, "sm_mhz": n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_SM),
                                  "temp_c": n.nvmlDeviceGetTemperature(h, n.NVML_TEMPERATURE_GPU)}
        try:
            sample["power_w"] = n.nvmlDeviceGetPowerUsage(h) / 1000.0
        except n.NVMLError:
            pass
        mask = int(get_reasons(h))
        self.reasons |= mask
        self.samples.append(sample)

    def close(self) -> None:
        if self.nvml is not None:
            try:
                self.nvml.nvmlShutdown()
            except Exception:
                pass

    def summary(self) -> NvmlSummary:
        out: NvmlSummary = {"gpu_index": self.gpu_index, "name": getattr(self, "name_", None),
                               "samples": len(self.samples),
                               "clock_event_reasons": nvml_reason_names(self.reasons)}
        sm = [s["sm_mhz"] for s in self.samples]
        if sm:
            s = min_max_mean(sm)
            out["sm_clock_mhz"] = {**s, "start": sm[0],
                                   "drop": round(1 - s["min"] / s["max"], 4) if s["max"] else 0}
            out["temp_c"] = min_max_mean([s["temp_c"] for s in self.samples])
        power = [(s["t"], s["power_w"]) for s in self.samples if "power_w" in s]
        if power:
            out["power_w"] = min_max_mean([p for _, p in power])
        if len(self.energy) == 2:
            (t0, e0), (t1, e1) = self.energy
            out["energy_counter_j"] = round((e1 - e0) / 1000.0, 4)
            out["energy_window_s"] = round(t1 - t0, 4)
        elif self.energy_error:
            out["energy_counter_error"] = self.energy_error
        return out

    def energy_window(self, interval_s: float, window_s: float) -> EnergyWindow | None:
        """Joules over the window: the energy counter where the GPU has one, else sampled power."""
        if len(self.energy) == 2:
            (t0, e0), (t1, e1) = self.energy
            window = t1 - t0
            joules = (e1 - e0) / 1000.0
            mean_w = joules / window if window > 0 else 0.0
            # Each end reads the counter as the driver last updated it: up to one update period
            # of energy is missed or added at each end (the period probed before warm-up; one
            # sampling interval when it could not be), plus the counter's 1 mJ resolution.
            period = getattr(self, "update_s", None) or interval_s
            return {"source": f"NVML total-energy counter (GPU {self.gpu_index})",
                    "joules": joules, "window_s": window, "mean_w": mean_w,
                    "uncertainty_j": 2 * mean_w * period + 0.002,
                    "method": "counter difference between the window's two ends; uncertainty: "
                              "one counter update period of mean power at each end",
                    "readings": 2, "counter_update_s": round(period, 5),
                    "sampling_hz": round(1 / period, 3) if period else None}
        power = [(s["t"], s["power_w"]) for s in self.samples if "power_w" in s]
        return sampled_energy(power, f"NVML power readings (GPU {self.gpu_index})", window_s)
