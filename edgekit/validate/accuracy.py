"""Accuracy and numeric fidelity of an artifact's logits, measured on the target runtime: the
validator's accuracy section and its chance check (top-1 and fidelity are edgekit.metrics')."""

from __future__ import annotations

import math
from typing import TypedDict

import numpy as np

from edgekit.metrics import fidelity, top1
from edgekit.results.record import AccuracySection

# The original must score significantly above chance on the eval set for a gate to mean
# anything: one-sided exact binomial test of its top-1 against 1/outputs at this level.
CHANCE_ALPHA = 0.01


def accuracy_section(logits: np.ndarray, labels: np.ndarray | None,
                     reference_logits: np.ndarray | None) -> AccuracySection:
    """top-1, its drop against the reference (points), agreement, fidelity, non-finite outputs."""
    finite = bool(np.isfinite(logits).all())
    out: AccuracySection = {"samples": int(len(logits)), "outputs_finite": finite}
    if labels is not None:
        out["top1"] = top1(logits, labels)
    if reference_logits is not None:
        out["fidelity"] = fidelity(reference_logits, logits)
        if labels is not None:
            out["reference_top1"] = top1(reference_logits, labels)
            out["top1_drop_points"] = 100.0 * (out["reference_top1"] - out["top1"])
    return out


class ChanceCheck(TypedDict):
    """The original's top-1 on the eval set against chance (chance_check)."""

    top1: float
    correct: int
    samples: int
    chance: float
    p_value: float
    alpha: float
    critical_top1: float
    above_chance: bool


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), exact (summed in log space; numpy and math only)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    i = np.arange(k, n + 1, dtype=np.float64)
    lgamma = np.vectorize(math.lgamma)
    logs = (math.lgamma(n + 1) - lgamma(i + 1) - lgamma(n - i + 1)
            + i * math.log(p) + (n - i) * math.log1p(-p))
    top = float(logs.max())
    return float(min(1.0, math.exp(top) * np.exp(logs - top).sum()))


def chance_check(reference_logits: np.ndarray, labels: np.ndarray,
                 alpha: float = CHANCE_ALPHA) -> ChanceCheck:
    """Is the original's top-1 on these labels significantly above chance (1 / its number of
    outputs)? `above_chance` is False when the one-sided binomial p-value exceeds `alpha`:
    an eval set whose labels are not the model's classes (or its preprocessing) scores there,
    and every artifact's drop against it is then 0 whatever the artifact does. `critical` is
    the smallest top-1 that would have passed."""
    n, outputs = int(len(labels)), int(reference_logits.shape[1])
    correct = int(np.sum(reference_logits.argmax(1) == labels))
    chance = 1.0 / outputs
    p_value = binomial_tail(correct, n, chance) if outputs > 1 else 0.0
    critical = next((k for k in range(int(n * chance), n + 1)
                     if binomial_tail(k, n, chance) <= alpha), n + 1) if outputs > 1 else 0
    return {"top1": correct / n if n else 0.0, "correct": correct, "samples": n,
            "chance": chance, "p_value": p_value, "alpha": alpha,
            "critical_top1": critical / n if n else 0.0,
            "above_chance": outputs <= 1 or p_value <= alpha}
