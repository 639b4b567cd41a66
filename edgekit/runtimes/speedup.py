"""Speed-up against the original with a confidence interval, and the never-slower verdict.

Two latency runs of the same model differ by a few percent on a quiet machine and by far more on
a loaded one, so "is the candidate slower than the original?" is a statistical question. The
speed-up is the ratio of the p50s (original over candidate, > 1 is faster); its interval comes
from *segments* of the samples rather than single samples, so that a load
change during the runs (which makes neighbouring samples alike) widens the interval instead of
hiding in it:

- samples timed in alternating rounds (candidate, original, candidate, ... : `alternate`) are
  split at the rounds, and round i of one is paired with round i of the other: the load at that
  moment hit both, so the per-round ratios are compared;
- two plain runs are each cut into contiguous segments, compared as two independent groups.

Each segment gives a p50; the interval is Student's t interval of the mean log ratio (paired:
per-round ratios; two runs: Welch's t on each run's segment log p50s), exponentiated. The
verdict against a minimum speed-up m: `slower` when the whole interval lies below m·(1 − TIE_MARGIN),
`meets` when it lies at or above m, `indistinguishable` otherwise. A gate fails only on `slower`.
The margin is there because two sessions of the *same* graph are not the same speed: in a CI run
on a loaded 2-core machine, ONNX Runtime timed a second export of a model at 0.954× the first
(99% CI 0.947–0.96), beyond the noise but not a slower model. Torch-free (numpy only), like every runtime module.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edgekit.runtimes.records import LatencyStats, SpeedupInterval

SEGMENTS = 10  # contiguous segments a plain run is cut into
TIE_MARGIN = 0.10  # below m but within 10% of it: a tie, never "slower" (module docstring)
VERDICTS = ("slower", "indistinguishable", "meets")


def _segments(samples: np.ndarray, counts: Sequence[int] | None) -> list[np.ndarray]:
    if counts:
        edges = np.cumsum([0, *counts])
        return [samples[a:b] for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]
    n = len(samples)
    k = min(SEGMENTS, max(1, n // 5))
    return [s for s in np.array_split(samples, k) if len(s)]


def t_quantile(p: float, df: float) -> float:
    """Student's t quantile from the normal one (Cornish-Fisher expansion; no scipy on a
    device): within 1 % of the exact value from 5 degrees of freedom up, up to 3 % narrower at
    3 (edgekit times 6 rounds or 10 segments, so 5 or more)."""
    from statistics import NormalDist

    z = NormalDist().inv_cdf(p)
    df = max(df, 1.0)
    return (z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3))


def speedup_interval(candidate_ms: Sequence[float], original_ms: Sequence[float], *,
                     confidence: float = 0.99, candidate_rounds: Sequence[int] | None = None,
                     original_rounds: Sequence[int] | None = None) -> SpeedupInterval:
    """The speed-up of the candidate over the original (ratio of p50s) and its `confidence`
    interval. `*_rounds` are the sample counts of each alternating round (the same number of
    rounds on both sides: paired); without them each run is cut into contiguous segments.
    Returns {speedup, ci_low, ci_high, confidence, method, segments}; with fewer than two
    segments a side the interval is the point itself and `method` says so."""
    cand = np.asarray(candidate_ms, dtype=np.float64)
    orig = np.asarray(original_ms, dtype=np.float64)
    if not len(cand) or not len(orig):
        raise ValueError("both runs need latency samples")
    point = float(np.median(orig) / np.median(cand))
    paired = bool(candidate_rounds and original_rounds
                  and len(candidate_rounds) == len(original_rounds))
    log_c = np.log([np.median(s) for s in _segments(cand, candidate_rounds if paired else None)])
    log_o = np.log([np.median(s) for s in _segments(orig, original_rounds if paired else None)])
    out = {"speedup": point, "confidence": confidence, "segments": [len(log_c), len(log_o)]}
    if len(log_c) < 2 or len(log_o) < 2:
        return {**out, "ci_low": point, "ci_high": point,
                "method": "too few samples for an interval"}
    q = 1 - (1 - confidence) / 2
    if paired and len(log_c) == len(log_o):  # per-round log ratios: the load of each round cancels within the pair
        diffs = log_o - log_c
        centre, se, df = diffs.mean(), diffs.std(ddof=1) / math.sqrt(len(diffs)), len(diffs) - 1
        method = f"t interval over {len(diffs)} alternating rounds (paired)"
    else:  # Welch's t on the segments' log p50s of two separate runs
        vc, vo = log_c.var(ddof=1) / len(log_c), log_o.var(ddof=1) / len(log_o)
        centre, se = log_o.mean() - log_c.mean(), math.sqrt(vc + vo)
        df = (vc + vo) ** 2 / max(vc**2 / (len(log_c) - 1) + vo**2 / (len(log_o) - 1), 1e-300)
        method = f"Welch t interval over {len(log_c)}+{len(log_o)} segments of two runs"
    half = t_quantile(q, df) * se
    low, high = math.exp(centre - half), math.exp(centre + half)
    # the interval is of the segments' typical ratio; the point is the pooled p50s' ratio,
    # which it always contains
    return {**out, "ci_low": min(low, point), "ci_high": max(high, point), "method": method}


def verdict(interval: SpeedupInterval, min_speedup: float) -> str:
    """`slower` (the whole interval below `min_speedup` less the tie margin), `meets` (at or
    above `min_speedup`) or `indistinguishable` (in between, or straddling it)."""
    eps = 1e-9
    if interval["ci_high"] < min_speedup * (1 - TIE_MARGIN) - eps:
        return "slower"
    if interval["ci_low"] >= min_speedup - eps:
        return "meets"
    return "indistinguishable"


def describe(interval: SpeedupInterval) -> str:
    """'speed-up 0.49×, 99% CI 0.46–0.52'"""
    s, lo, hi = interval["speedup"], interval.get("ci_low"), interval.get("ci_high")
    if lo is None or hi is None or lo == hi:
        return f"speed-up {s:.2f}×"
    return f"speed-up {s:.2f}×, {100 * interval['confidence']:g}% CI {lo:.2f}–{hi:.2f}"


def alternate(runners: dict[str, Any], x: np.ndarray, protocol: Any, rounds: int = 6,
              shuffle_seed: int | None = 0, *, whole_protocol: bool = False,
              measure: Callable[[str, Any, np.ndarray, Any], LatencyStats] | None = None,
              fields: Sequence[str] | None = None) -> dict[str, LatencyStats]:
    """Time every runner on `x` in `rounds` alternating rounds, so that a load change on the
    machine hits them all alike. The order is reshuffled each round (from `shuffle_seed`; None
    keeps the runners' order), so none always follows the same other one. Each round is a share
    of the protocol (its minimum queries and seconds over `rounds`, its warm-up in full the first
    time), or with `whole_protocol` the whole protocol, warm-up included, every round.
    `measure(label, runner, x, protocol)` times one round (default `runner.measure_latency`;
    the benchmarks pass theirs, which reruns a disturbed round and tallies it).

    Returns per label the statistics of all its samples (runtimes.latency.latency_stats) with
    `samples_ms`, `round_counts` and `rounds`, ready for `speedup_interval` (with `fields`, only
    those statistics), and the rounds' combined verdict on the machine (`disturbed`,
    `disturbed_reasons`, `reruns`: interference.combined_verdict)."""
    from edgekit.runtimes.interference import combined_verdict
    from edgekit.runtimes.latency import latency_stats

    if whole_protocol:
        first = later = protocol
    else:
        first = protocol.model_copy(update={
            "min_queries": max(1, math.ceil(protocol.min_queries / rounds)),
            "min_seconds": protocol.min_seconds / rounds,
            "max_seconds": max(protocol.max_seconds / rounds, 1e-3)})
        later = first.model_copy(update={"warmup_count": min(first.warmup_count, 3),
                                         "warmup_seconds": 0.0})
    if measure is None:
        def measure(label: str, runner: Any, x: np.ndarray, protocol: Any) -> LatencyStats:
            return runner.measure_latency(x, protocol)
    samples: dict[str, list[float]] = {label: [] for label in runners}
    counts: dict[str, list[int]] = {label: [] for label in runners}
    runs: dict[str, list[LatencyStats]] = {label: [] for label in runners}
    duration = dict.fromkeys(runners, 0.0)
    order = list(runners)
    rng = np.random.default_rng(shuffle_seed)
    for i in range(rounds):
        if shuffle_seed is not None:
            rng.shuffle(order)
        for label in order:
            stats = measure(label, runners[label], x, first if i == 0 else later)
            samples[label] += list(stats["samples_ms"])
            counts[label].append(len(stats["samples_ms"]))
            duration[label] += stats["duration_s"]
            runs[label].append(stats)
    out = {}
    for label in runners:
        stats = latency_stats(np.asarray(samples[label]), len(x), duration_s=duration[label],
                              protocol=protocol)
        if fields is not None:
            stats = {k: stats[k] for k in fields}
        else:
            stats.update(samples_ms=samples[label], round_counts=counts[label], rounds=rounds)
        out[label] = {**stats, **combined_verdict(runs[label])}
    return out


def compare(candidate: LatencyStats, original: LatencyStats, *, min_speedup: float,
            confidence: float = 0.99) -> SpeedupInterval:
    """Speed-up section of two latency sections (each with `samples_ms`, and `round_counts`
    when timed by `alternate`): the interval, the verdict and the sentence that gives both."""
    interval = speedup_interval(candidate["samples_ms"], original["samples_ms"],
                                confidence=confidence,
                                candidate_rounds=candidate.get("round_counts"),
                                original_rounds=original.get("round_counts"))
    interval["verdict"] = verdict(interval, min_speedup)
    interval["min_speedup"] = min_speedup
    return interval
