"""The latency protocol: statistics against numpy on known samples, the early-stopping bound
against a brute-force binomial, validity flags, and the timing loop's counts (never its times)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgekit import kinds
from edgekit.runtimes.base import RUNNERS, Runner
from edgekit.runtimes.latency import (
    LatencyProtocol,
    early_stopping_bound,
    latency_stats,
    min_samples_for,
)
from edgekit.spec import InputSpec


def test_statistics_match_numpy_on_known_samples():
    rng = np.random.default_rng(42)
    samples = rng.lognormal(mean=0.0, sigma=0.4, size=1000)
    stats = latency_stats(samples, batch=8, duration_s=2.0, protocol=LatencyProtocol())
    for p in (50, 90, 95, 99):
        assert stats[f"p{p}_ms"] == pytest.approx(np.percentile(samples, p), rel=1e-12)
    assert stats["mean_ms"] == pytest.approx(samples.mean(), rel=1e-12)
    assert stats["std_ms"] == pytest.approx(samples.std(ddof=1), rel=1e-12)
    assert stats["min_ms"] == samples.min() and stats["max_ms"] == samples.max()
    assert stats["count"] == 1000 and stats["batch"] == 8
    assert stats["throughput_per_s"] == pytest.approx(8 * 1000 / (samples.sum() / 1000))


def test_statistics_on_a_hand_checked_sequence():
    samples = np.arange(1.0, 11.0)  # 1..10 ms
    stats = latency_stats(samples, batch=1, duration_s=1.0,
                          protocol=LatencyProtocol(min_queries=10, min_seconds=0.5))
    assert stats["p50_ms"] == 5.5
    assert stats["p90_ms"] == pytest.approx(9.1)
    assert stats["mean_ms"] == 5.5
    assert stats["std_ms"] == pytest.approx(math.sqrt(55 / 6))
    assert stats["throughput_per_s"] == pytest.approx(10 / 0.055)
    assert stats["valid"] is True


def test_min_samples_for_the_claimed_percentiles():
    assert min_samples_for(90) == 44  # 0.9**44 < 0.01 <= 0.9**43
    assert min_samples_for(99) == 459
    assert 0.9 ** 44 <= 0.01 < 0.9 ** 43


def _brute_force_bound(samples: np.ndarray, percentile: float, confidence: float) -> float | None:
    n, p = len(samples), percentile / 100
    ordered = np.sort(samples)
    for k in range(1, n + 1):
        below = sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(k))
        if below >= confidence:
            return float(ordered[k - 1])
    return None


@pytest.mark.parametrize("n", [43, 44, 60, 100, 250, 459, 700])
@pytest.mark.parametrize("percentile", [90, 99])
def test_early_stopping_bound_matches_brute_force(n, percentile):
    samples = np.random.default_rng(n).exponential(1.0, n)
    assert early_stopping_bound(samples, percentile, 0.99) == _brute_force_bound(
        samples, percentile, 0.99)


def test_early_stopping_claims_follow_the_sample_count():
    protocol = LatencyProtocol(min_queries=10, min_seconds=0.0)
    few = latency_stats(np.ones(43), batch=1, duration_s=1.0, protocol=protocol)
    assert few["validity"]["p90_claimable"] is False and few["p90_bound_ms"] is None
    enough = latency_stats(np.arange(1.0, 45.0), batch=1, duration_s=1.0, protocol=protocol)
    assert enough["validity"]["p90_claimable"] is True
    assert enough["p90_bound_ms"] == 44.0  # with n = 44 only the maximum bounds p90
    assert enough["validity"]["p99_claimable"] is False
    assert enough["validity"]["p99_min_samples"] == 459
    # The bound is never below the plain percentile estimate.
    big = np.random.default_rng(1).lognormal(size=5000)
    stats = latency_stats(big, batch=1, duration_s=1.0, protocol=protocol)
    assert stats["p90_bound_ms"] >= stats["p90_ms"] and stats["p99_bound_ms"] >= stats["p99_ms"]


def test_run_short_of_its_minimums_is_invalid_but_kept():
    protocol = LatencyProtocol(min_queries=100, min_seconds=1.0)
    short_count = latency_stats(np.ones(50), batch=1, duration_s=2.0, protocol=protocol)
    assert short_count["valid"] is False
    assert short_count["validity"]["min_queries_met"] is False
    assert short_count["validity"]["min_duration_met"] is True
    assert short_count["count"] == 50 and short_count["p50_ms"] == 1.0  # kept, not dropped
    assert "min_queries" in short_count["validity"]["reasons"][0]
    short_time = latency_stats(np.ones(500), batch=1, duration_s=0.5, protocol=protocol)
    assert short_time["valid"] is False
    assert short_time["validity"]["min_duration_met"] is False
    empty = latency_stats(np.array([]), batch=1, duration_s=0.0, protocol=protocol)
    assert empty["valid"] is False and empty["count"] == 0 and "p50_ms" not in empty


class CountingRunner(Runner):
    """A runner without a library: counts binds and calls, so the loop's bookkeeping is checked
    without timing anything."""

    name = "counting-test"
    formats = ("onnx",)  # a kind of the table (a reader registers itself): unregistered below
    timing_scope = "a Python no-op"

    def load(self) -> None:
        self.binds = 0
        self.calls = 0

    def infer_impl(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        return np.zeros((len(x), 3), np.float32)

    def bind(self, x):
        self.binds += 1
        self.bound = x
        return lambda: self.infer_impl(x)


# a test's runner is not a runtime of edgekit: out of the registry and the kinds' readers again
RUNNERS.pop(CountingRunner.name, None)
kinds.remove_reader(CountingRunner.name)


def _runner() -> CountingRunner:
    return CountingRunner("none", InputSpec(shape=(1, 1, 2, 2), mean=(0.0,), std=(1.0,)))


def test_timing_loop_keeps_every_sample_and_meets_both_minimums():
    runner = _runner()
    x = np.zeros((4, 1, 2, 2), np.float32)
    protocol = LatencyProtocol(warmup_count=7, warmup_seconds=0.0, min_queries=50,
                               min_seconds=0.01, max_seconds=10.0)
    seen = []
    stats = runner.measure_latency(x, protocol, on_sample=seen.append)
    assert runner.binds == 1  # inputs staged once, before timing
    assert stats["warmup_queries"] >= 7
    assert stats["count"] >= 50 and stats["duration_s"] >= 0.01
    assert len(stats["samples_ms"]) == stats["count"] == len(seen)
    assert runner.calls == stats["warmup_queries"] + stats["count"]
    assert stats["valid"] is True and stats["stopped_by"] == "minimums met"
    assert stats["timing_scope"] == "a Python no-op" and stats["batch"] == 4
    assert stats["protocol"]["min_queries"] == 50


def test_timing_loop_that_hits_max_seconds_is_marked_invalid():
    runner = _runner()
    x = np.zeros((1, 1, 2, 2), np.float32)
    protocol = LatencyProtocol(warmup_count=0, warmup_seconds=0.0, min_queries=10**9,
                               min_seconds=0.0, max_seconds=0.05)
    stats = runner.measure_latency(x, protocol)
    assert stats["stopped_by"] == "max_seconds"
    assert stats["valid"] is False and stats["validity"]["min_queries_met"] is False
    assert stats["count"] == len(stats["samples_ms"]) > 0
