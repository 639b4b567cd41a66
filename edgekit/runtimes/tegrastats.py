"""Jetson rails, clocks and temperatures beside the timed window (runtimes/sampler.py's Jetson
sources): `tegrastats` lines parsed (JetPack 4, 5 and 6 formats), or the INA3221 rails from hwmon
sysfs when tegrastats is absent. A line in a format this parser does not know is named and records
nothing. Standard library only."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import threading
import time

from edgekit.runtimes.records import EnergyWindow, RailsSummary, TegraReading
from edgekit.runtimes.sampler import Source, min_max_mean, read_text, sampled_energy

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


def parse_tegrastats(line: str) -> TegraReading:
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
    out: TegraReading = {"rails_mw": rails}
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
        self.lines: list[tuple[float, TegraReading]] = []
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
        self.reader = threading.Thread(target=self._read_lines, name="edgekit-tegrastats", daemon=True)
        self.reader.start()

    def _read_lines(self) -> None:
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

    def in_window(self) -> list[tuple[float, TegraReading]]:
        if self.window is None:
            return []
        t0, t1 = self.window
        return [(t, p) for t, p in self.lines if t0 <= t <= t1]

    def summary(self) -> RailsSummary:
        return summarize_rails(self.in_window(), self.unknown)

    def energy_window(self, interval_s: float, window_s: float) -> EnergyWindow | None:
        return rails_energy(self.in_window(), "tegrastats", window_s)


def summarize_rails(lines: list[tuple[float, TegraReading]], unknown: list[str]
                    ) -> RailsSummary:
    """Clocks, temperatures and rail power of the parsed readings in the window."""
    out: RailsSummary = {"samples": len(lines)}
    if unknown:
        out["unknown_lines"] = unknown
    if not lines:
        return out
    rails: dict[str, list[float]] = {}
    for _, p in lines:
        for rail, mw in p.get("rails_mw", {}).items():
            rails.setdefault(rail, []).append(mw)
    out["rails_mw"] = {r: min_max_mean(v) for r, v in rails.items()}
    gpu = [p["gpu_mhz"] for _, p in lines if p.get("gpu_mhz")]
    if gpu:
        s = min_max_mean(gpu)
        out["gpu_clock_mhz"] = {**s, "drop": round(1 - s["min"] / s["max"], 4) if s["max"] else 0}
    cpu = [max(f for f in p["cpu_mhz"] if f) for _, p in lines
           if any(p.get("cpu_mhz") or [])]
    if cpu:
        s = min_max_mean(cpu)
        out["cpu_clock_mhz"] = {**s, "drop": round(1 - s["min"] / s["max"], 4) if s["max"] else 0}
    temps: dict[str, list[float]] = {}
    for _, p in lines:
        for name, c in p.get("temps_c", {}).items():
            temps.setdefault(name, []).append(c)
    out["temps_max_c"] = {n: max(v) for n, v in temps.items()}
    return out


def rails_energy(lines: list[tuple[float, TegraReading]], how: str, window_s: float
                 ) -> EnergyWindow | None:
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
            if (read_text(os.path.join(hwmon, "name")) or "").strip() != "ina3221":
                continue
            for label_path in sorted(glob.glob(os.path.join(hwmon, "in[0-9]_label"))):
                n = os.path.basename(label_path)[2]
                label = (read_text(label_path) or "").strip()
                volt, curr = os.path.join(hwmon, f"in{n}_input"), os.path.join(hwmon, f"curr{n}_input")
                if label and os.path.exists(volt) and os.path.exists(curr):
                    self.channels.append((label, volt, curr))
        self.lines: list[tuple[float, TegraReading]] = []

    def available(self) -> tuple[bool, str]:
        if not self.channels:
            return False, "Jetson rail power (no tegrastats and no INA3221 in hwmon)"
        return True, ""

    def tick(self, now: float) -> None:
        rails = {}
        for label, volt, curr in self.channels:
            v, i = read_text(volt), read_text(curr)
            if v and i:
                rails[label] = int(v) * int(i) / 1000.0  # mV × mA → mW
        if rails:
            self.lines.append((now, {"rails_mw": rails}))

    def summary(self) -> RailsSummary:
        return summarize_rails(self.lines, [])

    def energy_window(self, interval_s: float, window_s: float) -> EnergyWindow | None:
        return rails_energy(self.lines, "INA3221 sysfs", window_s)
