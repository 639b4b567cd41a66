"""Helpers shared by the benchmark scripts: writing results, timing anchors side by side."""

from __future__ import annotations

import datetime as _dt
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))


def write_results(name: str, data: dict[str, Any], markdown: str) -> Path:
    """benchmarks/results/NAME.json and NAME.md (the Markdown is what the README quotes)."""
    from edgekit.validate.env import capture_environment

    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name,
               "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
               "environment": capture_environment(), **data}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown)
    print(markdown, flush=True)
    return RESULTS / f"{name}.md"


def md_table(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def time_alternating(runners: dict[str, Any], x: Any, protocol: Any, rounds: int = 3,
                     shuffle_seed: int | None = None) -> dict[str, dict[str, Any]]:
    """Latency of every runner on `x`, measured in `rounds` alternating runs (a, b, c, a, b, c,
    ...; reshuffled each round when `shuffle_seed` is given, so no runner always follows the same
    other one), so a load change on the machine hits them all alike. Each runner's statistics
    come from all its samples: {label: {p50_ms, p90_ms, p99_ms, min_ms, count}}."""
    import numpy as np

    from edgekit.runtimes.latency import latency_stats

    samples: dict[str, list[float]] = {label: [] for label in runners}
    durations = dict.fromkeys(runners, 0.0)
    order = list(runners)
    rng = np.random.default_rng(shuffle_seed)
    for _ in range(rounds):
        if shuffle_seed is not None:
            rng.shuffle(order)
        for label in order:
            stats = runners[label].measure_latency(x, protocol)
            samples[label] += list(stats["samples_ms"])
            durations[label] += stats["duration_s"]
    out = {}
    for label in runners:
        stats = latency_stats(np.asarray(samples[label]), len(x), duration_s=durations[label],
                              protocol=protocol)
        out[label] = {k: stats[k] for k in ("p50_ms", "p90_ms", "p99_ms", "min_ms", "count")}
    return out
