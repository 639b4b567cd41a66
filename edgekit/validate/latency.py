"""Moved to edgekit/runtimes/latency.py (the protocol lives below the runtimes that run it).
This name stays for code written against the old place; import from edgekit.runtimes.latency."""

from edgekit.runtimes.latency import (  # noqa: F401
    PERCENTILES,
    LatencyProtocol,
    early_stopping_bound,
    latency_stats,
    min_samples_for,
)
