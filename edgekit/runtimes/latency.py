"""The latency protocol and its statistics. One implementation, used by every runner.

Protocol (defaults in the spirit of trtexec and MLPerf's single-stream scenario):
  warm-up until both `warmup_count` queries and `warmup_seconds` have passed (trtexec warms up
  for 200 ms; we also insist on a count, since a slow first call can eat the whole budget);
  then time every query until both `min_queries` and `min_seconds` are reached (trtexec: at least
  10 queries and 3 s; MLPerf single-stream: 1024 queries and 600 s, far too long for a desk), or
  `max_seconds` runs out. Every sample is kept.

Validity follows MLPerf's early-stopping idea: a percentile p is only claimed when there are
enough samples that, with 99% confidence, the true p-quantile lies at or below a reported order
statistic. A run that stopped at max_seconds before its minimums is marked invalid, not dropped.

What the machine did while timed (`interference`: a sampler beside the window, the disturbed
verdict, reruns, energy per inference) is runtimes/sampler.py and runtimes/interference.py.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edgekit.runtimes.interference import InterferencePolicy
from edgekit.runtimes.records import LatencyStats

PERCENTILES = (50, 90, 95, 99)


class LatencyProtocol(BaseModel):
    model_config = ConfigDict(extra="forbid")

    warmup_count: int = Field(10, ge=0)
    warmup_seconds: float = Field(0.2, ge=0)
    min_queries: int = Field(100, ge=1)
    min_seconds: float = Field(1.0, ge=0)
    max_seconds: float = Field(30.0, gt=0)
    confidence: float = Field(0.99, gt=0, lt=1)
    # (issue 18) what the machine did while timed: the sampler, the verdict, reruns
    interference: InterferencePolicy = Field(default_factory=InterferencePolicy)


def min_samples_for(percentile: float, confidence: float = 0.99) -> int:
    """Fewest samples for which the maximum is an upper bound of the `percentile` quantile with
    `confidence` (n ≥ log(1−c)/log(p)): 44 for p90, 459 for p99 at 99%."""
    p = percentile / 100.0
    return math.ceil(math.log(1 - confidence) / math.log(p))


def _binomial_cdf(n: int, p: float) -> np.ndarray:
    """P(Binomial(n, p) <= j) for j = 0..n, computed in log space (vectorised; n may be 10^6)."""
    ks = np.arange(n + 1, dtype=np.float64)
    # log C(n, k) = sum_{i=1..k} log((n - i + 1) / i)
    steps = np.log(n - ks[1:] + 1) - np.log(ks[1:])
    log_comb = np.concatenate([[0.0], np.cumsum(steps)])
    log_pmf = log_comb + ks * math.log(p) + (n - ks) * math.log1p(-p)
    top = log_pmf.max()
    return np.minimum(np.cumsum(np.exp(log_pmf - top)) * math.exp(top), 1.0)


def early_stopping_bound(samples: np.ndarray, percentile: float,
                         confidence: float = 0.99) -> float | None:
    """The smallest order statistic x_(k) with P(true p-quantile ≤ x_(k)) ≥ confidence, or None
    when there are too few samples to claim the percentile at all.

    x_(k) lies above the true p-quantile exactly when fewer than k samples fall at or below it,
    so P(quantile ≤ x_(k)) = P(Binomial(n, p) < k) = cdf[k − 1].
    """
    n = len(samples)
    if n == 0:
        return None
    cdf = _binomial_cdf(n, percentile / 100.0)
    hits = np.flatnonzero(cdf >= confidence)
    if not len(hits):
        return None
    k = int(hits[0]) + 1
    if k > n:
        return None
    return float(np.partition(np.asarray(samples, dtype=np.float64), k - 1)[k - 1])


def latency_stats(samples_ms: np.ndarray, batch: int, *, duration_s: float,
                  protocol: LatencyProtocol) -> LatencyStats:
    """p50/p90/p95/p99/mean/std/min/max, throughput, and validity flags for one run.

    `valid` is False when the run stopped (at max_seconds) before both minimums were met; the
    record is kept either way. `pXX_bound_ms` is the early-stopping upper bound of the XX-th
    percentile at `protocol.confidence`, None (and `pXX_claimable` False) with too few samples.
    Throughput is batch × queries / time spent inside the queries.
    """
    samples = np.asarray(samples_ms, dtype=np.float64)
    stats: LatencyStats = {"count": int(len(samples)), "duration_s": round(duration_s, 4),
                           "batch": batch}
    if len(samples):
        for p in PERCENTILES:
            stats[f"p{p}_ms"] = float(np.percentile(samples, p))
        stats.update(mean_ms=float(samples.mean()),
                     std_ms=float(samples.std(ddof=1)) if len(samples) > 1 else 0.0,
                     min_ms=float(samples.min()), max_ms=float(samples.max()))
        stats["throughput_per_s"] = batch * len(samples) / max(samples.sum() / 1000.0, 1e-12)
    met_count = len(samples) >= protocol.min_queries
    met_duration = duration_s >= protocol.min_seconds
    validity: dict = {"min_queries_met": met_count, "min_duration_met": met_duration}
    reasons = []
    if not met_count:
        reasons.append(f"{len(samples)} queries < min_queries {protocol.min_queries}")
    if not met_duration:
        reasons.append(f"{duration_s:.2f} s < min_seconds {protocol.min_seconds}")
    for p in (90, 99):
        bound = early_stopping_bound(samples, p, protocol.confidence)
        stats[f"p{p}_bound_ms"] = bound
        validity[f"p{p}_claimable"] = bound is not None
        validity[f"p{p}_min_samples"] = min_samples_for(p, protocol.confidence)
    validity["reasons"] = reasons
    stats["valid"] = bool(met_count and met_duration)
    stats["validity"] = validity
    return stats
