"""MSE calibration: the activation range that minimises the expected squared quantization error
over a tensor's histogram (clipping error outside the range, rounding error inside it).

ONNX Runtime's calibrators offer min-max, percentile, entropy and distribution, but no MSE, and
NNCF's post-training quantization has no MSE range estimator either; so edgekit computes it from
the signed histograms ONNX Runtime's entropy calibrator collects, and hands the ranges to
quantize_static like any other calibration result."""

from __future__ import annotations

import numpy as np

GRID = 64  # candidate clipping points per side


def expected_mse(centers: np.ndarray, weights: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                 levels: int) -> np.ndarray:
    """Expected squared error of quantizing values `centers` (probabilities `weights`) to
    `levels` uniform steps on [lo, hi], for arrays of candidate (lo, hi) (broadcast)."""
    step = (hi - lo) / (levels - 1)
    c = centers[None, :]
    lo_, hi_ = lo[:, None], hi[:, None]
    clip_low = np.where(c < lo_, (c - lo_) ** 2, 0.0)
    clip_high = np.where(c > hi_, (c - hi_) ** 2, 0.0)
    inside = np.where((c >= lo_) & (c <= hi_), (step[:, None] ** 2) / 12.0, 0.0)
    return ((clip_low + clip_high + inside) * weights[None, :]).sum(axis=1)


def mse_range(hist: np.ndarray, edges: np.ndarray, minimum: float, maximum: float, *,
              symmetric: bool, levels: int = 256) -> tuple[float, float]:
    """The (lo, hi) clipping range with the smallest expected quantization MSE.

    Zero is always inside the range (as every int8 scheme requires). `symmetric` searches
    lo = -hi only (signed int8 with zero point 0, as TensorRT wants)."""
    hist = np.asarray(hist, np.float64)
    edges = np.asarray(edges, np.float64)
    total = hist.sum()
    minimum, maximum = min(float(minimum), 0.0), max(float(maximum), 0.0)
    if total <= 0 or maximum - minimum <= 0:
        return minimum, maximum
    centers = 0.5 * (edges[:-1] + edges[1:])
    weights = hist / total
    fractions = np.arange(1, GRID + 1) / GRID
    if symmetric:
        amax = max(-minimum, maximum)
        hi = amax * fractions
        errors = expected_mse(centers, weights, -hi, hi, levels - 1)
        best = hi[int(np.argmin(errors))]
        return -float(best), float(best)
    his = maximum * fractions if maximum > 0 else np.zeros(1)
    los = minimum * fractions if minimum < 0 else np.zeros(1)
    best_err, best = np.inf, (minimum, maximum)
    for lo in los:
        errors = expected_mse(centers, weights, np.full_like(his, lo), his, levels)
        i = int(np.argmin(errors))
        if errors[i] < best_err:
            best_err, best = float(errors[i]), (float(lo), float(his[i]))
    return best

