"""Top-1 and numeric fidelity of a model's logits: the ground-floor measurements that the passes
(prune, dwsep, quantize), the int8 budget loop, the exporters' parity checks, the trainer and the
validator all use. numpy only at import; torch_logits / torch_top1 import torch when called."""

from __future__ import annotations

from typing import Any

import numpy as np

# How far (in points or as a ratio) a number may pass an accuracy limit and still meet it: float
# noise, not a margin. The one tolerance of the validator's gate and the int8 budget loop.
TOLERANCE = 1e-9


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


def torch_logits(model: Any, x: np.ndarray, batch_size: int = 500,
                 advance: Any = None) -> np.ndarray:
    """The logits of a torch model on `x`, in eval mode, on the model's device (its mode is
    restored afterwards); `advance(n)` (a progress bar's) after each batch."""
    import torch

    was_training = model.training
    model.eval()
    device = next(model.parameters(), torch.empty(0)).device  # a model training on a GPU
    outs = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size])).to(device)
            outs.append(model(batch).float().cpu().numpy())
            if advance is not None:
                advance(len(batch))
    model.train(was_training)
    return np.concatenate(outs)


def torch_top1(model: Any, dataset: Any, batch_size: int = 500, advance: Any = None) -> float:
    """Fraction of `dataset` whose argmax logit equals its label (the compress table's accuracy
    column); `advance(n)` (a progress bar's) after each batch."""
    from edgekit.errors import DataError, MissingLabelsError

    if dataset.y is None:
        raise MissingLabelsError(f"{dataset.source} has no labels; top-1 needs them")
    if len(dataset) == 0:
        raise DataError(f"{dataset.source} is empty")
    return top1(torch_logits(model, dataset.x, batch_size, advance), dataset.y)
