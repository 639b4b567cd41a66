"""What the machine did while a latency window was timed (issue 18). Standard library only, so it
runs wherever a runtime runs (a device with numpy and a runtime, the SSH agent's `edgekit
validate`); NVML comes from nvidia-ml-py (`pynvml`), imported only when the runner is on an NVIDIA
GPU (runtimes/sampler_nvml.py); Jetson rails come from `tegrastats` (or the INA3221 sysfs files
when it is absent; runtimes/tegrastats.py).

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
import resource
import threading
import time
from collections.abc import Callable
from typing import Any

from edgekit.runtimes.records import (
    CpuFreqSummary,
    CpuSummary,
    EnergyWindow,
    MachineSummary,
    SourceSummary,
)

_STAT_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def read_text(path: str) -> str | None:
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return None


def min_max_mean(values: list[float]) -> dict[str, float]:
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

    def summary(self) -> SourceSummary:
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
        text = read_text(os.path.join(self.proc_root, "stat"))
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
        text = read_text(os.path.join(self.proc_root, "loadavg"))
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

    def summary(self) -> CpuSummary:
        assert self.first is not None and self.last is not None
        other, steal, own, busy = self._cores(self.first, self.last)
        window = self.last[0] - self.first[0]
        out: CpuSummary = {
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
        values = [float(t) for t in (read_text(p) for p in self.paths) if t and t.strip().isdigit()]
        if values:
            self.values.append(max(values) / 1000.0)

    def summary(self) -> CpuFreqSummary:
        if not self.values:
            return {"samples": 0}
        s = min_max_mean(self.values)
        return {"samples": len(self.values), "start_mhz": self.values[0], "min_mhz": s["min"],
                "max_mhz": s["max"], "drop": round(1 - s["min"] / s["max"], 4) if s["max"] else 0}


class ThermalSource(Source):
    """Every readable thermal zone (°C): where it started and its maximum in the window."""

    name = "thermal"

    def __init__(self, sys_root: str = "/sys") -> None:
        self.zones = []
        for folder in sorted(glob.glob(os.path.join(sys_root, "class/thermal/thermal_zone*"))):
            kind = (read_text(os.path.join(folder, "type")) or os.path.basename(folder)).strip()
            if read_text(os.path.join(folder, "temp")) is not None:
                self.zones.append((f"{kind}" if kind else os.path.basename(folder), folder))
        self.values: dict[str, list[float]] = {}

    def available(self) -> tuple[bool, str]:
        if not self.zones:
            return False, "temperatures (no readable thermal zone)"
        return True, ""

    def tick(self, now: float) -> None:
        for name, folder in self.zones:
            text = read_text(os.path.join(folder, "temp"))
            if text and text.strip().lstrip("-").isdigit():
                self.values.setdefault(name, []).append(int(text) / 1000.0)

    def summary(self) -> dict[str, dict[str, float]]:
        return {name: {"start_c": v[0], "max_c": max(v)} for name, v in self.values.items()}


def sampled_energy(power: list[tuple[float, float]], source: str, window_s: float
                   ) -> EnergyWindow | None:
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
            from edgekit.runtimes.tegrastats import InaSysfsSource, TegrastatsSource

            sources = [CpuSource(proc_root), CpuFreqSource(sys_root), ThermalSource(sys_root)]
            if gpu_index is not None:
                from edgekit.runtimes.sampler_nvml import NvmlSource

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

    def finish(self) -> MachineSummary:
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

    def summary(self) -> MachineSummary:
        out: MachineSummary = {"interval_s": self.interval_s, "ticks": self.ticks,
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
