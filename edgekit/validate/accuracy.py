"""Accuracy and numeric fidelity of an artifact's logits, measured on the target runtime."""

from __future__ import annotations

from typing import Any

import numpy as np


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(logits.argmax(1) == labels))


def fidelity(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """Max abs difference, mean cosine similarity per sample, top-1 agreement."""
    ref, cand = reference.astype(np.float64), candidate.astype(np.float64)
    num = np.sum(ref * cand, axis=1)
    den = np.maximum(np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1), 1e-30)
    return {
        "max_abs_diff": float(np.max(np.abs(ref - cand))) if ref.size else 0.0,
        "cosine": float(np.mean(num / den)) if ref.size else 1.0,
        "top1_agreement": float(np.mean(ref.argmax(1) == cand.argmax(1))) if ref.size else 1.0,
    }


def accuracy_section(logits: np.ndarray, labels: np.ndarray | None,
                     reference_logits: np.ndarray | None) -> dict[str, Any]:
    """top-1, its drop against the reference (points), agreement, fidelity, non-finite outputs."""
    finite = bool(np.isfinite(logits).all())
    out: dict[str, Any] = {"samples": int(len(logits)), "outputs_finite": finite}
    if labels is not None:
        out["top1"] = top1(logits, labels)
    if reference_logits is not None:
        out["fidelity"] = fidelity(reference_logits, logits)
        if labels is not None:
            out["reference_top1"] = top1(reference_logits, labels)
            out["top1_drop_points"] = 100.0 * (out["reference_top1"] - out["top1"])
    return out
