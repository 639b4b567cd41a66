"""The verdict on a timed window (issue 18): was the machine disturbed while we timed, and why;
energy per inference where power was measured; and the rerun rule (a disturbed measurement is
measured again, up to `max_reruns` times, and the first undisturbed one is kept).

The policy is part of the latency protocol (`latency.interference` in a device profile), so every
runner, `edgekit bench`, `edgekit validate` and the benchmarks judge the same way.

Why 0.25 of a core by default: an idle machine's own background (kernel threads, daemons, our
sampler) costs a few hundredths of a core, a single busy process costs 1.0. A quarter of a core
sits well clear of both: the verdict flips on real work, not on noise. And a quarter of a core
taken from a runtime that keeps its cores busy is a preemption every few scheduler slices (each
several ms, far longer than a sub-millisecond inference): enough to move p90 and p99.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from edgekit.runtimes.records import Attempt, Energy, LatencyStats, MachineSummary, Verdict

BENIGN_GPU_REASONS = ["gpu_idle", "applications_clocks_setting", "display_clock_setting"]
DISTURBED_MARK = "⚠"  # next to every number (and ratio) computed from a disturbed run
DISTURBED_NOTE = f"{DISTURBED_MARK} measured while the machine was disturbed"


def disturbed_suffix(disturbed: Any, short: bool = False) -> str:
    """What follows a number (or ratio) from a disturbed run: " ⚠ measured while the machine was
    disturbed" in a sentence, " ⚠" in a table cell (`short`); "" when `disturbed` is falsy."""
    if not disturbed:
        return ""
    return f" {DISTURBED_MARK if short else DISTURBED_NOTE}"


class InterferencePolicy(BaseModel):
    """How a timed window is watched and judged (device profile: `latency.interference`)."""

    model_config = ConfigDict(extra="forbid")

    sample: bool = Field(True, description="sample the machine beside the timed window")
    sample_interval_s: float = Field(0.25, ge=0.02, le=5.0,
                                     description="seconds between samples (and tegrastats lines)")
    max_other_cores: float = Field(0.25, ge=0, description=(
        "other processes' CPU time plus steal time, in cores averaged over the window, above "
        "which the run is disturbed"))
    max_clock_drop: float = Field(0.10, gt=0, lt=1, description=(
        "a CPU or GPU clock falling this fraction below its peak in the window is a disturbance"))
    ignored_gpu_reasons: list[str] = Field(
        default_factory=lambda: list(BENIGN_GPU_REASONS),
        description="NVML clock-event reasons that are not throttling")
    max_reruns: int = Field(2, ge=0, le=20, description=(
        "measure a disturbed run again up to this many times; the first undisturbed one is kept"))


def judge(machine: MachineSummary, policy: InterferencePolicy) -> tuple[bool | None, list[str]]:
    """(disturbed, reasons) of one window from the sampler's summary. None when nothing could
    be judged (no /proc, the CPU sampler failed, a window too short, no clock readable); the
    reasons then say what could not be judged, when known."""
    reasons: list[str] = []
    unjudged: list[str] = []
    judged = False
    cpu = machine.get("cpu")
    # /proc/stat counts in clock ticks (100/s): the share's resolution over a window is about
    # 4 ticks (both ends, busy and own time each rounded); a window too short to resolve half the
    # limit is not judged on CPU share rather than judged on rounding noise.
    need_s = 8 / ((cpu or {}).get("clock_ticks_per_s", 100) * max(policy.max_other_cores, 1e-9))
    if cpu and cpu.get("window_s", 0.0) < need_s:
        unjudged.append(f"other work not judged: a {cpu['window_s']:.2f} s window is too short "
                        f"to resolve {policy.max_other_cores:g} cores in clock ticks (needs "
                        f"≥ {need_s:.2f} s; raise min_seconds)")
    elif cpu:
        judged = True
        other, steal = cpu.get("other_cores", 0.0), cpu.get("steal_cores", 0.0)
        if other + steal > policy.max_other_cores:
            reasons.append(f"other work took {other + steal:.2f} cores on average while timed "
                           f"(other processes {other:.2f}, steal {steal:.2f}; limit "
                           f"{policy.max_other_cores:g})")
    clocks = [("CPU clock", (machine.get("cpu_freq") or {}), "min_mhz", "max_mhz"),
              ("GPU SM clock", (machine.get("nvml") or {}).get("sm_clock_mhz") or {}, "min", "max")]
    for rails in (machine.get("tegrastats"), machine.get("ina3221")):
        for key, label in (("gpu_clock_mhz", "Jetson GPU clock"), ("cpu_clock_mhz", "Jetson CPU clock")):
            clocks.append((label, (rails or {}).get(key) or {}, "min", "max"))
    for label, section, lo, hi in clocks:
        if not section.get(hi):
            continue
        judged = True
        drop = 1 - section[lo] / section[hi]
        if drop > policy.max_clock_drop:
            reasons.append(f"{label} dropped {100 * drop:.0f}% while timed ({section[hi]:.0f} → "
                           f"{section[lo]:.0f} MHz; limit {100 * policy.max_clock_drop:.0f}%)")
    nvml = machine.get("nvml")
    if nvml:
        judged = True
        bad = [r for r in nvml.get("clock_event_reasons", []) if r not in policy.ignored_gpu_reasons]
        if bad:
            reasons.append(f"GPU clocks held back while timed: {', '.join(bad)}")
    if not judged:
        return None, unjudged
    return bool(reasons), reasons


def energy_per_inference(machine: MachineSummary, queries: int, batch: int) -> Energy:
    """Joules per query (and per image) over the timed window where a power source measured it,
    with the sampling rate and the uncertainty; {"source": None, "note": "no power source ..."}
    otherwise, never a number."""
    window = machine.get("energy_window")
    if not window or not queries:
        why = [n for n in machine.get("not_sampled", []) if "power" in n or "energy" in n]
        fewer = any(isinstance(machine.get(k), dict) and machine[k].get("samples")
                    for k in ("tegrastats", "ina3221", "nvml"))
        note = ("no power source: too few power readings in the window (lengthen min_seconds or "
                "shorten sample_interval_s)" if fewer else "no power source")
        return {"source": None, "note": note + (f" ({'; '.join(why)})" if why and not fewer else "")}
    joules, err = window["joules"], window["uncertainty_j"]
    return {
        "source": window["source"], "joules": round(joules, 6),
        "uncertainty_j": round(err, 6), "j_per_query": joules / queries,
        "j_per_query_uncertainty": err / queries, "mj_per_image": 1000 * joules / (queries * batch),
        "mean_w": round(window["mean_w"], 4), "window_s": round(window["window_s"], 4),
        "readings": window.get("readings"), "sampling_hz": window.get("sampling_hz"),
        "method": window.get("method"), "queries": queries, "batch": batch,
        **({"counter_update_s": window["counter_update_s"]} if "counter_update_s" in window
           else {}),
    }


def energy_cell(energy: Energy | None) -> str:
    """J per query ± uncertainty for tables, or the reason there is no number."""
    if not energy:
        return "-"
    if energy.get("source") is None:
        return "no power source"
    return f"{energy['j_per_query']:.4g} ± {energy['j_per_query_uncertainty']:.2g} J"


def is_disturbed(stats: dict[str, Any] | None) -> bool:
    """Whether a latency section (or a record, via its `latency`) was measured disturbed."""
    if not stats:
        return False
    if "latency" in stats and isinstance(stats["latency"], dict):
        stats = stats["latency"]
    return stats.get("disturbed") is True


def combined_verdict(runs: list[LatencyStats]) -> Verdict:
    """One verdict over several timed runs (the rounds of an alternating timing): disturbed
    when any kept run was, None when none could be judged; the reasons and reruns of all."""
    flags = [r.get("disturbed") for r in runs]
    disturbed = True if True in flags else (False if False in flags else None)
    reasons = sorted({why for r in runs if r.get("disturbed") for why in
                      r.get("disturbed_reasons", [])})
    return {"disturbed": disturbed, "disturbed_reasons": reasons,
            "reruns": sum(r.get("reruns", 0) for r in runs)}


def measure_undisturbed(runner: Any, x: Any, protocol: Any,
                        on_sample: Callable[[float], None] | None = None, *,
                        before_attempt: Callable[[int], None] | None = None,
                        judge_attempt: Callable[[LatencyStats], tuple[bool | None, list[str]]]
                        | None = None) -> LatencyStats:
    """`runner.measure_latency` under the rerun rule: a disturbed attempt is measured again, up
    to `protocol.interference.max_reruns` times; the first undisturbed attempt is kept, else the
    last one, marked disturbed. Every attempt's verdict is kept in `attempts`.

    `before_attempt(i)` runs before attempt i (a caller can settle the machine; the tests start
    and stop their load there). `judge_attempt(stats)` replaces the attempt's own verdict (a
    caller with its own criterion; the tests attribute a known load)."""
    policy = protocol.interference
    attempts: list[Attempt] = []
    stats: LatencyStats = {}
    for attempt in range(policy.max_reruns + 1):
        if before_attempt is not None:
            before_attempt(attempt)
        stats = runner.measure_latency(x, protocol, on_sample)
        if judge_attempt is not None:
            stats["disturbed"], stats["disturbed_reasons"] = judge_attempt(stats)
        cpu = (stats.get("machine") or {}).get("cpu") or {}
        attempts.append({"attempt": attempt, "disturbed": stats.get("disturbed"),
                         "reasons": stats.get("disturbed_reasons", []),
                         "p50_ms": stats.get("p50_ms"), "other_cores": cpu.get("other_cores")})
        if stats.get("disturbed") is not True:
            break
    stats["attempts"] = attempts
    stats["reruns"] = len(attempts) - 1
    return stats
