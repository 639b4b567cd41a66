"""What the machine did while a latency window was timed (issue 18). Standard library only, so it
runs wherever a runtime runs (a device with numpy and a runtime, the SSH agent's `edgekit
validate`); NVML comes from nvidia-ml-py (`pynvml`), imported only when the runner is on an NVIDIA
GPU; Jetson rails come from `tegrastats` (or the INA3221 sysfs files when it is absent).

One low-rate thread beside the timed window (every `interval_s`, 0.25 s by default; it sleeps in
between and holds the GIL for well under a millisecond per tick) reads:

- /proc/stat: CPU time of the whole machine; minus our own process's CPU time (os.times: every
  thread of ours, the runtime's workers included) it is the time *other* work took, in cores;
  steal time (a hypervisor giving our vCPUs to someone else) separately;
- getrusage: our involuntary context switches (the scheduler took a core from us);
- /proc/loadavg; CPU frequency (cpufreq scaling_cur_freq, the fastest core per tick) and thermal
  zones where readable;
- NVML (runner on an NVIDIA GPU): SM clock, temperature, power, clock-event ("throttle") reasons,
  and the total-energy counter at both ends of the window;
- Jetson: tegrastats lines (CPU/GPU clocks, temperatures, rail power such as VDD_IN), or the
  INA3221 rails from sysfs.

Nothing here is fatal: a source that cannot be read is named in `not_sampled`, a source that fails
mid-run stops, its error goes to `errors`, and the measurement stands. `summary()` is plain JSON.
"""

from __future__ import annotations

import glob
import math
import os
import re
import resource
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

_STAT_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def _read(path: str) -> str | None:
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return None


def _stats(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "max": max(values), "mean": sum(values) / len(values)}


# ------------------------------------------------------------------------------------ sources
class Source:
    """One thing sampled. `begin()` at the start of the window, `tick()` on every sample,
    `end()` once after it; `summary()` what the record keeps. Raising anywhere disables the
    source (the error is recorded); `available()` False names what is not sampled and why."""

    name = "source"

    def available(self) -> tuple[bool, str]:
        return True, ""

    def open(self) -> None:
        """Before warm-up: start anything slow to start (a tegrastats process)."""

    def begin(self, now: float) -> None:
        self.tick(now)

    def tick(self, now: float) -> None:
        raise NotImplementedError

    def end(self, now: float) -> None:
        self.tick(now)

    def close(self) -> None:
        """Release what open() started; called once, also after an error."""

    def summary(self) -> dict[str, Any]:
        raise NotImplementedError


class CpuSource(Source):
    """Other processes' CPU share and steal time (/proc/stat minus our own CPU time), our
    involuntary context switches (getrusage), load average."""

    name = "cpu"

    def __init__(self, proc_root: str = "/proc") -> None:
        self.proc_root = proc_root
        self.hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.first: tuple[float, dict[str, int], float] | None = None
        self.last: tuple[float, dict[str, int], float] | None = None
        self.peak_other = 0.0
        self.rusage0: Any = None
        self.rusage1: Any = None
        self.loads: list[float] = []

    def available(self) -> tuple[bool, str]:
        if self._stat() is None:
            return False, (f"other processes' CPU share and steal time ({self.proc_root}/stat is "
                           "not readable)")
        return True, ""

    def _stat(self) -> dict[str, int] | None:
        text = _read(os.path.join(self.proc_root, "stat"))
        if not text or not text.startswith("cpu "):
            return None
        values = [int(v) for v in text.splitlines()[0].split()[1:]]
        padded = (values + [0] * len(_STAT_FIELDS))[: len(_STAT_FIELDS)]
        return dict(zip(_STAT_FIELDS, padded, strict=True))

    @staticmethod
    def _own() -> float:
        t = os.times()
        return t.user + t.system

    def _load(self) -> None:
        text = _read(os.path.join(self.proc_root, "loadavg"))
        if text:
            self.loads.append(float(text.split()[0]))

    def begin(self, now: float) -> None:
        stat = self._stat()
        if stat is None:
            raise OSError(f"{self.proc_root}/stat is not readable")
        self.first = self.last = (now, stat, self._own())
        self.rusage0 = resource.getrusage(resource.RUSAGE_SELF)
        self._load()

    def _cores(self, a: tuple[float, dict[str, int], float], b: tuple[float, dict[str, int], float]
               ) -> tuple[float, float, float, float]:
        """(other, steal, own, busy) in cores between two readings."""
        wall = max(b[0] - a[0], 1e-9)
        d = {k: b[1][k] - a[1][k] for k in _STAT_FIELDS}
        # guest time is already counted in user; iowait is idle time
        busy = (d["user"] + d["nice"] + d["system"] + d["irq"] + d["softirq"]) / self.hz
        own = b[2] - a[2]
        return max(busy - own, 0.0) / wall, d["steal"] / self.hz / wall, own / wall, busy / wall

    def tick(self, now: float) -> None:
        stat = self._stat()
        if stat is None:
            raise OSError(f"{self.proc_root}/stat stopped being readable")
        reading = (now, stat, self._own())
        if self.last is not None and now - self.last[0] >= 0.05:
            self.peak_other = max(self.peak_other, self._cores(self.last, reading)[0])
        self.last = reading

    def end(self, now: float) -> None:
        self.tick(now)
        self.rusage1 = resource.getrusage(resource.RUSAGE_SELF)
        self._load()

    def summary(self) -> dict[str, Any]:
        assert self.first is not None and self.last is not None
        other, steal, own, busy = self._cores(self.first, self.last)
        window = self.last[0] - self.first[0]
        out: dict[str, Any] = {
            "cores": os.cpu_count(), "window_s": round(window, 4),
            "other_cores": round(other, 4), "other_cores_peak": round(self.peak_other, 4),
            "steal_cores": round(steal, 4), "own_cores": round(own, 4),
            "busy_cores": round(busy, 4), "clock_ticks_per_s": self.hz,
        }
        if self.rusage0 is not None and self.rusage1 is not None:
            inv = self.rusage1.ru_nivcsw - self.rusage0.ru_nivcsw
            out["involuntary_switches"] = inv
            out["involuntary_switches_per_s"] = round(inv / max(window, 1e-9), 2)
            out["voluntary_switches"] = self.rusage1.ru_nvcsw - self.rusage0.ru_nvcsw
        if self.loads:
            out["loadavg_1m"] = {"start": self.loads[0], "end": self.loads[-1]}
        return out


class CpuFreqSource(Source):
    """The fastest core's clock on every tick (cpufreq scaling_cur_freq, kHz): a drop of it
    during the window is throttling or another load taking the turbo budget."""

    name = "cpu_freq"

    def __init__(self, sys_root: str = "/sys") -> None:
        self.paths = sorted(glob.glob(os.path.join(
            sys_root, "devices/system/cpu/cpu[0-9]*/cpufreq/scaling_cur_freq")))
        self.values: list[float] = []

    def available(self) -> tuple[bool, str]:
        if not self.paths:
            return False, "CPU frequency (no cpufreq scaling_cur_freq here)"
        return True, ""

    def tick(self, now: float) -> None:
        values = [float(t) for t in (_read(p) for p in self.paths) if t and t.strip().isdigit()]
        if values:
            self.values.append(max(values) / 1000.0)

    def summary(self) -> dict[str, Any]:
        if not self.values:
            return {"samples": 0}
        s = _stats(self.values)
        return {"samples": len(self.values), "start_mhz": self.values[0], "min_mhz": s["min"],
                "max_mhz": s["max"], "drop": round(1 - s["min"] / s["max"], 4) if s["max"] else 0}


class ThermalSource(Source):
    """Every readable thermal zone (°C): where it started and its maximum in the window."""

    name = "thermal"

    def __init__(self, sys_root: str = "/sys") -> None:
        self.zones = []
        for folder in sorted(glob.glob(os.path.join(sys_root, "class/thermal/thermal_zone*"))):
            kind = (_read(os.path.join(folder, "type")) or os.path.basename(folder)).strip()
            if _read(os.path.join(folder, "temp")) is not None:
                self.zones.append((f"{kind}" if kind else os.path.basename(folder), folder))
        self.values: dict[str, list[float]] = {}

    def available(self) -> tuple[bool, str]:
        if not self.zones:
            return False, "temperatures (no readable thermal zone)"
        return True, ""

    def tick(self, now: float) -> None:
        for name, folder in self.zones:
            text = _read(os.path.join(folder, "temp"))
            if text and text.strip().lstrip("-").isdigit():
                self.values.setdefault(name, []).append(int(text) / 1000.0)

    def summary(self) -> dict[str, Any]:
        return {name: {"start_c": v[0], "max_c": max(v)} for name, v in self.values.items()}


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

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"gpu_index": self.gpu_index, "name": getattr(self, "name_", None),
                               "samples": len(self.samples),
                               "clock_event_reasons": nvml_reason_names(self.reasons)}
        sm = [s["sm_mhz"] for s in self.samples]
        if sm:
            s = _stats(sm)
            out["sm_clock_mhz"] = {**s, "start": sm[0],
                                   "drop": round(1 - s["min"] / s["max"], 4) if s["max"] else 0}
            out["temp_c"] = _stats([s["temp_c"] for s in self.samples])
        power = [(s["t"], s["power_w"]) for s in self.samples if "power_w" in s]
        if power:
            out["power_w"] = _stats([p for _, p in power])
        if len(self.energy) == 2:
            (t0, e0), (t1, e1) = self.energy
            out["energy_counter_j"] = round((e1 - e0) / 1000.0, 4)
            out["energy_window_s"] = round(t1 - t0, 4)
        elif self.energy_error:
            out["energy_counter_error"] = self.energy_error
        return out

    def energy_window(self, interval_s: float, window_s: float) -> dict[str, Any] | None:
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


def sampled_energy(power: list[tuple[float, float]], source: str, window_s: float
                   ) -> dict[str, Any] | None:
    """Energy of the window from instantaneous power readings [(t, W)]: mean power × window.
    Uncertainty: the standard error of the mean power times the window, plus one sampling
    interval of mean power for the window's edges that no reading covers. None with fewer than
    2 readings (a window shorter than the sampling interval has no energy to claim)."""
    if len(power) < 2:
        return None
    times = [t for t, _ in power]
    watts = [w for _, w in power]
    n = len(watts)
    mean_w = sum(watts) / n
    std = math.sqrt(sum((w - mean_w) ** 2 for w in watts) / (n - 1))
    span = times[-1] - times[0]
    interval = span / (n - 1)
    return {"source": source, "joules": mean_w * window_s, "window_s": window_s,
            "mean_w": mean_w, "uncertainty_j": window_s * std / math.sqrt(n) + mean_w * interval,
            "method": "mean of instantaneous power readings × window; uncertainty: standard "
                      "error of the mean × window + one sampling interval of mean power",
            "readings": n, "sampling_hz": round(1 / interval, 3) if interval > 0 else None}


# ----------------------------------------------------------------------------- Jetson rails
# Rails that measure the whole module's input, in the order they are preferred.
INPUT_RAILS = ("VDD_IN", "POM_5V_IN", "VIN_SYS_5V0", "VDD_SYS_5V0")
_TEGRA_RAM = re.compile(r"\bRAM \d+/\d+[MK]B\b")
_TEGRA_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)(mW)?/(\d+)(mW)?(?=\s|$)")
_TEGRA_TEMP = re.compile(r"\b([A-Za-z][A-Za-z0-9_]*)@(-?\d+(?:\.\d+)?)C\b")
_TEGRA_CPU = re.compile(r"\bCPU \[([^\]]*)\]")
_TEGRA_GPU = re.compile(r"\b(GR3D2?_FREQ) (\d+)%(?:@\[?([\d,]+)\]?)?")
_TEGRA_EMC = re.compile(r"\bEMC_FREQ (\d+)%(?:@(\d+))?")


class UnknownTegrastatsLine(ValueError):
    """A tegrastats line in a format this parser does not know: the line is named, nothing is
    recorded from it."""


def parse_tegrastats(line: str) -> dict[str, Any]:
    """One tegrastats line → {cpu_mhz: [per core or None when off], gpu_mhz, gpu_load_pct,
    emc_mhz, temps_c: {sensor: °C}, rails_mw: {rail: instantaneous mW}}.

    Formats: JetPack 5 and 6 print rails as `VDD_IN 4968mW/4968mW` (instantaneous/average mW);
    JetPack 4 as `POM_5V_IN 4520/4680` (mW without the unit). A line without the `RAM x/yMB`
    field or without any power rail raises UnknownTegrastatsLine, since reading numbers from a
    format we do not know could record wrong ones."""
    text = line.strip()
    if not _TEGRA_RAM.search(text):
        raise UnknownTegrastatsLine(f"unknown tegrastats format (no 'RAM used/totalMB' field): "
                                    f"{text[:200]!r}")
    rails = {}
    for name, cur, unit_cur, _avg, unit_avg in _TEGRA_RAIL.findall(text):
        if name in ("RAM", "SWAP", "IRAM") or bool(unit_cur) != bool(unit_avg):
            continue
        rails[name] = float(cur)
    if not rails:
        raise UnknownTegrastatsLine(f"unknown tegrastats format (no power rail such as "
                                    f"'VDD_IN 4968mW/4968mW'): {text[:200]!r}")
    out: dict[str, Any] = {"rails_mw": rails}
    cpu = _TEGRA_CPU.search(text)
    if cpu:
        cores = []
        for core in cpu.group(1).split(","):
            freq = re.search(r"@(\d+)", core)
            cores.append(float(freq.group(1)) if freq else None)
        out["cpu_mhz"] = cores
    for name, load, freqs in _TEGRA_GPU.findall(text):
        if name == "GR3D_FREQ":
            out["gpu_load_pct"] = float(load)
            if freqs:
                out["gpu_mhz"] = max(float(f) for f in freqs.split(",") if f)
    emc = _TEGRA_EMC.search(text)
    if emc and emc.group(2):
        out["emc_mhz"] = float(emc.group(2))
    temps = {name: float(value) for name, value in _TEGRA_TEMP.findall(text)
             if not name.isdigit()}
    out["temps_c"] = temps
    return out


def input_rail(rails: dict[str, float]) -> str | None:
    """The rail that measures the whole module's input (VDD_IN on Orin), if the line has one."""
    return next((r for r in INPUT_RAILS if r in rails), None)


class TegrastatsSource(Source):
    """`tegrastats --interval MS` beside the window; every line timestamped as it arrives and
    parsed. Lines in an unknown format are named in `unknown_lines` and record nothing."""

    name = "tegrastats"

    def __init__(self, interval_s: float, command: str | None = None) -> None:
        self.command = command or shutil.which("tegrastats")
        self.interval_ms = max(int(interval_s * 1000), 10)
        self.proc: subprocess.Popen | None = None
        self.reader: threading.Thread | None = None
        self.lines: list[tuple[float, dict[str, Any]]] = []
        self.unknown: list[str] = []
        self.window: tuple[float, float] | None = None
        self.t0: float | None = None

    def available(self) -> tuple[bool, str]:
        if not self.command:
            return False, "Jetson clocks and rail power (no tegrastats on PATH)"
        return True, ""

    def open(self) -> None:
        self.proc = subprocess.Popen([self.command, "--interval", str(self.interval_ms)],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     stdin=subprocess.DEVNULL, text=True, bufsize=1)
        self.reader = threading.Thread(target=self._read, name="edgekit-tegrastats", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            now = time.perf_counter()
            try:
                self.lines.append((now, parse_tegrastats(line)))
            except UnknownTegrastatsLine as exc:
                if len(self.unknown) < 5:
                    self.unknown.append(str(exc))

    def begin(self, now: float) -> None:
        self.t0 = now

    def tick(self, now: float) -> None:
        pass

    def end(self, now: float) -> None:
        self.window = (self.t0 or now, now)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def in_window(self) -> list[tuple[float, dict[str, Any]]]:
        if self.window is None:
            return []
        t0, t1 = self.window
        return [(t, p) for t, p in self.lines if t0 <= t <= t1]

    def summary(self) -> dict[str, Any]:
        return summarize_rails(self.in_window(), self.unknown)

    def energy_window(self, interval_s: float, window_s: float) -> dict[str, Any] | None:
        return rails_energy(self.in_window(), "tegrastats", window_s)


def summarize_rails(lines: list[tuple[float, dict[str, Any]]], unknown: list[str]
                    ) -> dict[str, Any]:
    """Clocks, temperatures and rail power of the parsed readings in the window."""
    out: dict[str, Any] = {"samples": len(lines)}
    if unknown:
        out["unknown_lines"] = unknown
    if not lines:
        return out
    rails: dict[str, list[float]] = {}
    for _, p in lines:
        for rail, mw in p.get("rails_mw", {}).items():
            rails.setdefault(rail, []).append(mw)
    out["rails_mw"] = {r: _stats(v) for r, v in rails.items()}
    gpu = [p["gpu_mhz"] for _, p in lines if p.get("gpu_mhz")]
    if gpu:
        s = _stats(gpu)
        out["gpu_clock_mhz"] = {**s, "drop": round(1 - s["min"] / s["max"], 4) if s["max"] else 0}
    cpu = [max(f for f in p["cpu_mhz"] if f) for _, p in lines
           if any(p.get("cpu_mhz") or [])]
    if cpu:
        s = _stats(cpu)
        out["cpu_clock_mhz"] = {**s, "drop": round(1 - s["min"] / s["max"], 4) if s["max"] else 0}
    temps: dict[str, list[float]] = {}
    for _, p in lines:
        for name, c in p.get("temps_c", {}).items():
            temps.setdefault(name, []).append(c)
    out["temps_max_c"] = {n: max(v) for n, v in temps.items()}
    return out


def rails_energy(lines: list[tuple[float, dict[str, Any]]], how: str, window_s: float
                 ) -> dict[str, Any] | None:
    readings = [(t, p["rails_mw"]) for t, p in lines]
    rail = next((input_rail(r) for _, r in readings if input_rail(r)), None)
    if rail is None:
        return None
    power = [(t, r[rail] / 1000.0) for t, r in readings if rail in r]
    return sampled_energy(power, f"{how} {rail} (module input rail)", window_s)


class InaSysfsSource(Source):
    """Jetson INA3221 rails from hwmon sysfs (inN_label, inN_input mV, currN_input mA), when
    tegrastats is absent: one reading per tick."""

    name = "ina3221"

    def __init__(self, sys_root: str = "/sys") -> None:
        self.channels: list[tuple[str, str, str]] = []
        for hwmon in sorted(glob.glob(os.path.join(sys_root, "class/hwmon/hwmon*"))):
            if (_read(os.path.join(hwmon, "name")) or "").strip() != "ina3221":
                continue
            for label_path in sorted(glob.glob(os.path.join(hwmon, "in[0-9]_label"))):
                n = os.path.basename(label_path)[2]
                label = (_read(label_path) or "").strip()
                volt, curr = os.path.join(hwmon, f"in{n}_input"), os.path.join(hwmon, f"curr{n}_input")
                if label and os.path.exists(volt) and os.path.exists(curr):
                    self.channels.append((label, volt, curr))
        self.lines: list[tuple[float, dict[str, Any]]] = []

    def available(self) -> tuple[bool, str]:
        if not self.channels:
            return False, "Jetson rail power (no tegrastats and no INA3221 in hwmon)"
        return True, ""

    def tick(self, now: float) -> None:
        rails = {}
        for label, volt, curr in self.channels:
            v, i = _read(volt), _read(curr)
            if v and i:
                rails[label] = int(v) * int(i) / 1000.0  # mV × mA → mW
        if rails:
            self.lines.append((now, {"rails_mw": rails}))

    def summary(self) -> dict[str, Any]:
        return summarize_rails(self.lines, [])

    def energy_window(self, interval_s: float, window_s: float) -> dict[str, Any] | None:
        return rails_energy(self.lines, "INA3221 sysfs", window_s)


# ------------------------------------------------------------------------------------ sampler
class MachineSampler:
    """Sample the machine beside one timed window:

        sampler = MachineSampler(interval_s=0.25, gpu_index=None)
        sampler.open()      # before warm-up (starts tegrastats, opens NVML)
        sampler.begin()     # the window starts (baselines read now)
        ...                 # timed queries; a thread ticks every interval_s
        summary = sampler.finish()   # the window ends; JSON-ready summary

    `sources` replaces the default list (the tests use it to fail a source mid-run)."""

    def __init__(self, *, interval_s: float = 0.25, gpu_index: int | None = None,
                 proc_root: str = "/proc", sys_root: str = "/sys",
                 sources: list[Source] | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.interval_s = interval_s
        self.clock = clock
        if sources is None:
            sources = [CpuSource(proc_root), CpuFreqSource(sys_root), ThermalSource(sys_root)]
            if gpu_index is not None:
                sources.append(NvmlSource(gpu_index))
            tegra = TegrastatsSource(interval_s)
            sources.append(tegra if tegra.available()[0] else InaSysfsSource(sys_root))
        self.sources: list[Source] = []
        self.not_sampled: list[str] = []
        self.errors: list[str] = []
        for source in sources:
            try:
                ok, why = source.available()
            except Exception as exc:
                ok, why = False, f"{source.name} ({type(exc).__name__}: {exc})"
            if ok:
                self.sources.append(source)
            else:
                self.not_sampled.append(why)
        self._failed: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.t0 = self.t1 = 0.0
        self.ticks = 0

    def _call(self, source: Source, method: str, *args: Any) -> None:
        if source.name in self._failed:
            return
        try:
            getattr(source, method)(*args)
        except Exception as exc:
            self._failed.add(source.name)
            at = f" {self.clock() - self.t0:.2f} s into the window" if self.t0 else ""
            self.errors.append(f"{source.name} failed{at} ({method}): {type(exc).__name__}: {exc}")

    def open(self) -> MachineSampler:
        for source in self.sources:
            self._call(source, "open")
        return self

    def begin(self) -> None:
        self.t0 = self.clock()
        with self._lock:
            for source in self.sources:
                self._call(source, "begin", self.t0)
        self._thread = threading.Thread(target=self._run, name="edgekit-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            now = self.clock()
            with self._lock:
                self.ticks += 1
                for source in self.sources:
                    self._call(source, "tick", now)

    def finish(self) -> dict[str, Any]:
        """End the window and return the summary; never raises."""
        self.t1 = self.clock()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for source in self.sources:
            self._call(source, "end", self.t1)
        self.close()
        return self.summary()

    def close(self) -> None:
        for source in self.sources:
            try:
                source.close()
            except Exception as exc:
                self.errors.append(f"{source.name} failed (close): {type(exc).__name__}: {exc}")

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"interval_s": self.interval_s, "ticks": self.ticks,
                               "window_s": round(self.t1 - self.t0, 4)}
        for source in self.sources:
            if source.name in self._failed and not _partial_ok(source):
                continue
            try:
                out[source.name] = source.summary()
            except Exception as exc:
                self.errors.append(f"{source.name} failed (summary): {type(exc).__name__}: {exc}")
        energy = None
        for source in self.sources:
            window_energy = getattr(source, "energy_window", None)
            if window_energy is None or source.name in self._failed:
                continue
            try:
                energy = window_energy(self.interval_s, self.t1 - self.t0)
            except Exception as exc:
                self.errors.append(f"{source.name} failed (energy): {type(exc).__name__}: {exc}")
            if energy:
                break
        if energy:
            out["energy_window"] = energy
        out["not_sampled"] = list(self.not_sampled)
        out["errors"] = list(self.errors)
        out["failed"] = sorted(self._failed)
        return out


def _partial_ok(source: Source) -> bool:
    """A failed source still summarises what it read before failing, when it read anything."""
    if isinstance(source, CpuSource):
        return False  # without both ends the share would be wrong
    return True
