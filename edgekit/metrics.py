"""Top-1 and numeric fidelity of a model's logits: the ground-floor measurements that the passes
(prune, dwsep, quantize), the int8 budget loop, the exporters' parity checks, the trainer and the
validator all use. numpy only at import; torch_logits / torch_top1 import torch when called."""

from __future__ import annotations

from typing import Any, TypedDict

import numpy as np

# How far (in points or as a ratio) a number may pass an accuracy limit and still meet it: float
# noise, not a margin. The one tolerance of the validator's gate and the int8 budget loop.
TOLERANCE = 1e-9


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(logits.argmax(1) == labels))


# The SQNR reported for logits that match exactly (no error to divide by): above any float32
# comparison (float64 rounding of the sums is about 1e-16 of them, 320 dB), and finite for JSON.
SQNR_IDENTICAL_DB = 300.0
# Near-ties are excused only while the comparison's typical error (the tie level) is small next
# to the logits: over this fraction of the reference's typical largest |logit| (an all-zero
# output is 1.0) the tie level would exceed every margin and excuse every sample, so top-1
# agreement is counted on all of them.
MAX_TIE_FRACTION = 1 / 3
# The tie level never falls below float32 rounding: two runtimes computing the same logits in
# another summation order differ by ~1e-7 of them, so a margin under 1e-6 of the typical largest
# |logit| is a tie under any runtime (OpenVINO's CPU ran an fp16 model bit-exact on 59 of 60
# images, median error 0, and flipped the 60th, whose two best logits differed by ~1e-12).
FP32_TIE_FRACTION = 1e-6


def sqnr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio of candidate logits, in dB: 10·log10(Σ ref² / Σ
    (ref − cand)²) over every logit. Unlike top-1 agreement it does not depend on how close the
    reference's top two logits are: on a random-weight model with near-tied logits an int8 model
    may flip most top-1s at 30 dB (a faithful copy), while 0 dB is an error as large as the
    logits themselves (an all-zero output, a broken layer). SQNR_IDENTICAL_DB when they match."""
    ref, cand = reference.astype(np.float64), candidate.astype(np.float64)
    signal, noise = float(np.sum(ref * ref)), float(np.sum((ref - cand) ** 2))
    if noise <= signal * 10 ** (-SQNR_IDENTICAL_DB / 10):
        return SQNR_IDENTICAL_DB
    if signal == 0.0:
        return -SQNR_IDENTICAL_DB
    return float(10 * np.log10(signal / noise))


class DecisiveAgreement(TypedDict):
    """Top-1 agreement on the decisive samples, how many were decisive, the tie level, the
    logits' level it is compared with, and whether near-ties were excused."""

    decisive_agreement: float
    decisive_samples: int
    near_ties: int
    tie_level: float
    logit_level: float
    ties_excused: bool


class Fidelity(DecisiveAgreement):
    """fidelity(): the logits' error (max |Δ|, cosine, SQNR), top-1 agreement, and the
    decisive agreement."""

    max_abs_diff: float
    cosine: float
    sqnr_db: float
    top1_agreement: float


def decisive_agreement(reference: np.ndarray, candidate: np.ndarray) -> DecisiveAgreement:
    """Top-1 agreement counted only where it means something: on the samples whose reference
    top-1 margin (best logit minus the runner-up) exceeds the difference measured between the
    two (the median over samples of the largest logit difference: the comparison's typical
    error, fp32 rounding for an export, quantization error for int8; never below
    FP32_TIE_FRACTION of the logits). A sample whose reference
    is a near-tie (a random-weight model's logits all within 1e-7 of each other) flips on any
    rounding and is not a disagreement; the logits' error judges it (the tolerance, the cosine,
    `sqnr_db`). That excuse holds only while the error is small (the tie level at most
    MAX_TIE_FRACTION of the median over samples of the reference's largest |logit|,
    `ties_excused`): an error as large as the logits sets a tie level over every margin, and
    then every sample counts. Returns the agreement over the decisive samples
    (1.0 when there are none), how many were decisive and the tie level."""
    ref, cand = reference.astype(np.float64), candidate.astype(np.float64)
    if not len(ref):
        return {"decisive_agreement": 1.0, "decisive_samples": 0, "near_ties": 0,
                "tie_level": 0.0, "logit_level": 0.0, "ties_excused": True}
    if ref.shape[1] < 2:
        margin = np.full(len(ref), np.inf)
    else:
        top2 = np.sort(ref, axis=1)[:, -2:]
        margin = top2[:, 1] - top2[:, 0]
    logit_level = float(np.median(np.abs(ref).max(axis=1)))
    level = max(float(np.median(np.abs(ref - cand).max(axis=1))),
                FP32_TIE_FRACTION * logit_level)
    excused = level <= MAX_TIE_FRACTION * logit_level
    decisive = margin > level if excused else np.ones(len(ref), bool)
    same = ref.argmax(1) == cand.argmax(1)
    count = int(decisive.sum())
    return {"decisive_agreement": float(same[decisive].mean()) if count else 1.0,
            "decisive_samples": count, "near_ties": int(len(ref) - count), "tie_level": level,
            "logit_level": logit_level, "ties_excused": bool(excused)}


def fidelity(reference: np.ndarray, candidate: np.ndarray) -> Fidelity:
    """Max abs difference, mean cosine similarity per sample, the logits' SQNR (dB), top-1
    agreement, and top-1 agreement on the samples that are not near-ties (`decisive_agreement`,
    with its sample counts): on near-tied logits top-1 agreement says little, the SQNR and the
    decisive agreement say whether the candidate is faithful."""
    ref, cand = reference.astype(np.float64), candidate.astype(np.float64)
    num = np.sum(ref * cand, axis=1)
    den = np.maximum(np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1), 1e-30)
    return Fidelity(
        max_abs_diff=float(np.max(np.abs(ref - cand))) if ref.size else 0.0,
        cosine=float(np.mean(num / den)) if ref.size else 1.0,
        sqnr_db=sqnr_db(ref, cand) if ref.size else SQNR_IDENTICAL_DB,
        top1_agreement=float(np.mean(ref.argmax(1) == cand.argmax(1))) if ref.size else 1.0,
        **decisive_agreement(ref, cand),
    )


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
