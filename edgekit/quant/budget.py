"""The accuracy budget and the loop that keeps it.

After quantizing, top-1 of the fp32 model and of the int8 model are measured on the eval set on
the runtime that will run the artifact (ONNX Runtime for QDQ models, OpenVINO for IRs). If the
drop exceeds the budget, the quantized layers are ranked by sensitivity — each one in turn is
kept in float, ranked by how much top-1 agreement with fp32 that wins back on a stratified
subset of the eval set (then by how much logit error it removes) — and the most sensitive are
kept in float, one more at a time, until the budget holds. If it never holds (or only by keeping
every layer float, which is no int8 model at all), the loop fails with a GateError that carries
the table of what was tried; no int8 artifact is left behind.

The loop is runtime-neutral: it talks to a `QuantBackend` (ONNX Runtime and OpenVINO ones live
in ort_backend.py and openvino.py), so the same budget holds for every target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypedDict

import numpy as np

from edgekit.errors import GateError
from edgekit.metrics import TOLERANCE, top1


class QuantBackend(Protocol):
    """One runtime's int8 producer and evaluator, as the budget loop needs it."""

    runtime: str

    def reference_logits(self, x: np.ndarray) -> np.ndarray:
        """Logits of the fp32 model on this runtime."""

    def quantize(self, exclude: Sequence[str], out_stem: str) -> Path:
        """An int8 artifact with the `exclude` layers kept in float; returns its path."""

    def logits(self, artifact: Path, x: np.ndarray) -> np.ndarray:
        """Logits of an artifact produced by quantize()."""

    def candidates(self, artifact: Path) -> list[str]:
        """Quantized layers of `artifact` that could be kept in float, in graph order."""

    def discard(self, artifact: Path) -> None:
        """Remove an artifact the loop no longer needs."""


@dataclass(frozen=True)
class DropBudget:
    """A compress chain's accuracy budget (validate.gate.Budget is the validator's gate, which
    also bounds agreement, logits and speed-up). Allowed top-1 drop: `max_drop` in percentage points (absolute) and/or `max_drop_rel` as
    a fraction of fp32 top-1 (0.01 keeps 99% of it, as MLPerf does); both hold when both given.

    With `original_top1` (the model before prune/dwsep/distill, in a compress run) the budget
    bounds the whole chain against the original: int8 may drop what is left after the fp32
    model it quantizes has already spent `100 * (original_top1 - fp32_top1)` points."""

    max_drop: float | None = None
    max_drop_rel: float | None = None
    original_top1: float | None = None

    @property
    def active(self) -> bool:
        return self.max_drop is not None or self.max_drop_rel is not None

    def total_points(self, original_top1: float) -> float | None:
        """The whole budget in points, against `original_top1`."""
        limits = []
        if self.max_drop is not None:
            limits.append(float(self.max_drop))
        if self.max_drop_rel is not None:
            limits.append(100.0 * float(self.max_drop_rel) * original_top1)
        return min(limits) if limits else None

    def spent_points(self, fp32_top1: float) -> float:
        """Points the steps before int8 spent (0 without an original)."""
        if self.original_top1 is None:
            return 0.0
        return 100.0 * (self.original_top1 - fp32_top1)

    def allowed_points(self, fp32_top1: float) -> float | None:
        """What int8 may drop below `fp32_top1`: the budget left after the earlier steps."""
        total = self.total_points(self.original_top1 if self.original_top1 is not None
                                  else fp32_top1)
        return None if total is None else total - self.spent_points(fp32_top1)

    def describe(self) -> str:
        parts = []
        if self.max_drop is not None:
            parts.append(f"drop ≤ {self.max_drop:g} points")
        if self.max_drop_rel is not None:
            parts.append(f"int8 ≥ {100 * (1 - self.max_drop_rel):g}% of fp32 top-1")
        return " and ".join(parts) or "none"


class TrialRecord(TypedDict):
    """One attempt of the budget loop: the layers kept float, the one it added, its top-1 and
    drop, whether it held the budget."""

    float_layers: list[str]
    added: str | None
    top1: float | None
    drop_points: float | None
    held: bool | None


class Sensitivity(TypedDict, total=False):
    """One layer's sensitivity to int8 (rank_sensitivity): what keeping it float gains."""

    layer: str
    agreement_gained: float
    error_removed: float
    rank: int


class Int8Accuracy(TypedDict):
    """The int8 artifact's top-1 against the fp32 model's, on the runtime that measured both."""

    runtime: str
    eval_source: str | None
    samples: int
    fp32_top1: float | None
    int8_top1: float | None
    drop_points: float | None


class BudgetRecord(TypedDict, total=False):
    """What the manifest records of the budget loop: the rule and the drop it allows (of the
    whole chain, with what earlier steps spent), whether it held, the layers kept float, every
    attempt and the sensitivity ranking."""

    max_drop: float | None
    max_drop_rel: float | None
    rule: str
    allowed_points: float | None
    scope: str
    original_top1: float
    spent_before_int8_points: float
    held: bool | None
    float_layers: list[str]
    trials: list[TrialRecord]
    sensitivity: list[Sensitivity]


@dataclass
class Trial:
    float_layers: list[str]
    top1: float | None
    drop_points: float | None
    held: bool | None
    added: str | None = None  # the layer this trial added to the float ones

    def as_dict(self) -> TrialRecord:
        return {"float_layers": list(self.float_layers), "added": self.added,
                "top1": self.top1, "drop_points": self.drop_points, "held": self.held}


@dataclass
class Outcome:
    artifact: Path
    fp32_top1: float | None = None
    top1: float | None = None
    drop_points: float | None = None
    allowed_points: float | None = None
    held: bool | None = None
    float_layers: list[str] = field(default_factory=list)
    trials: list[Trial] = field(default_factory=list)
    sensitivity: list[Sensitivity] = field(default_factory=list)
    eval_samples: int = 0
    reference_logits: np.ndarray | None = None
    logits: np.ndarray | None = None

    def accuracy(self, runtime: str, eval_source: str | None) -> Int8Accuracy:
        return {"runtime": runtime, "eval_source": eval_source, "samples": self.eval_samples,
                "fp32_top1": self.fp32_top1, "int8_top1": self.top1,
                "drop_points": self.drop_points}

    def budget_record(self, budget: DropBudget) -> BudgetRecord:
        chain: BudgetRecord = {}
        if budget.original_top1 is not None and self.fp32_top1 is not None:
            chain = {"scope": "the whole chain, against the original model",
                     "original_top1": budget.original_top1,
                     "spent_before_int8_points": budget.spent_points(self.fp32_top1)}
        return {"max_drop": budget.max_drop, "max_drop_rel": budget.max_drop_rel,
                "rule": budget.describe(), "allowed_points": self.allowed_points, **chain,
                "held": self.held, "float_layers": self.float_layers,
                "trials": [t.as_dict() for t in self.trials], "sensitivity": self.sensitivity}


def logit_error(candidate: np.ndarray, reference: np.ndarray) -> float:
    """Normalised squared error of logits: sum((c - r)²) / sum(r²)."""
    ref = reference.astype(np.float64)
    return float(np.sum((candidate.astype(np.float64) - ref) ** 2) / max(np.sum(ref**2), 1e-30))


def trials_table(trials: list[Trial], allowed: float | None) -> str:
    """Plain-text table of the attempts (for the error message and logs): each row keeps one
    more layer in float than the one above it, the most sensitive first."""
    width = max([len("layer added to float")] + [len(t.added or "") for t in trials])
    lines = [f"  {'float layers':>12}  {'layer added to float':<{width}}  {'int8 top-1':>10}  "
             f"{'drop pts':>8}  budget"]
    for t in trials:
        top = "-" if t.top1 is None else f"{t.top1:.4f}"
        drop = "-" if t.drop_points is None else f"{t.drop_points:.2f}"
        lines.append(f"  {len(t.float_layers):>12}  {t.added or '-':<{width}}  {top:>10}  "
                     f"{drop:>8}  {'holds' if t.held else 'misses'}")
    if allowed is not None:
        lines.append(f"  (allowed drop: {allowed:.2f} points)")
    return "\n".join(lines)


def _progress(description: str, total: int):
    from edgekit.progress import progress

    return progress(description, total=total)


def rank_sensitivity(backend: QuantBackend, base: Path, candidates: list[str], x: np.ndarray,
                     reference: np.ndarray, exclude: Sequence[str]) -> list[Sensitivity]:
    """Each candidate kept in float in turn, most sensitive first: the one whose float version
    agrees best with fp32 on top-1 (on x), ties broken by the smaller logit error. Top-1
    agreement leads because that is what the budget measures; logit error alone can mislead
    (a badly clipped range elsewhere can make a better model's logits further off)."""
    base_logits = backend.logits(base, x)
    base_agreement = top1(base_logits, reference.argmax(1))
    base_error = logit_error(base_logits, reference)
    ranked: list[Sensitivity] = []
    with _progress(f"Ranking {len(candidates)} layers by sensitivity", len(candidates)) as advance:
        for i, name in enumerate(candidates):
            artifact = backend.quantize([*exclude, name], f"sensitivity-{i}")
            try:
                logits = backend.logits(artifact, x)
            finally:
                backend.discard(artifact)
            ranked.append({"layer": name,
                           "agreement_gained": top1(logits, reference.argmax(1)) - base_agreement,
                           "error_removed": base_error - logit_error(logits, reference)})
            advance(1)
    ranked.sort(key=lambda r: (-r["agreement_gained"], -r["error_removed"]))
    for rank, r in enumerate(ranked, 1):
        r["rank"] = rank
    return ranked


def keep_budget(backend: QuantBackend, eval_x: np.ndarray | None, eval_y: np.ndarray | None,
                budget: DropBudget, *, exclude: Sequence[str] = (), sensitivity_samples: int = 500,
                max_float_layers: int | None = None, seed: int = 0) -> Outcome:
    """Quantize; if an eval set is given, measure fp32 and int8 top-1 on the backend's runtime;
    if the budget is missed, keep the most sensitive layers in float one at a time until it
    holds. Raises GateError (with the table of trials) when it cannot be met."""
    exclude = list(exclude)
    artifact = backend.quantize(exclude, "int8")
    if eval_x is None or eval_y is None:
        return Outcome(artifact=artifact, float_layers=exclude)
    reference = backend.reference_logits(eval_x)
    fp32 = top1(reference, eval_y)
    allowed = budget.allowed_points(fp32)
    if allowed is not None and allowed < -TOLERANCE and budget.spent_points(fp32) > TOLERANCE \
            and allowed + budget.spent_points(fp32) >= 0:  # a negative budget fails below
        backend.discard(artifact)
        raise GateError(
            f"the steps before int8 already spent the accuracy budget ({budget.describe()}, "
            "against the original model): "
            f"original top-1 {budget.original_top1:.4f}, the fp32 model to quantize "
            f"{fp32:.4f} on {backend.runtime} ({budget.spent_points(fp32):.2f} points spent, "
            f"{allowed + budget.spent_points(fp32):g} allowed). No int8 model was written.",
            hint="compress less (a smaller prune ratio, no dwsep), distill longer, or loosen "
            "--max-drop")
    logits = backend.logits(artifact, eval_x)
    int8 = top1(logits, eval_y)
    drop = 100.0 * (fp32 - int8)
    held = None if allowed is None else drop <= allowed + TOLERANCE
    outcome = Outcome(artifact=artifact, fp32_top1=fp32, top1=int8, drop_points=drop,
                      allowed_points=allowed, held=held, float_layers=list(exclude),
                      eval_samples=int(len(eval_x)), reference_logits=reference, logits=logits)
    outcome.trials.append(Trial(list(exclude), int8, drop, held))
    if held is None or held:
        return outcome

    candidates = [c for c in backend.candidates(artifact) if c not in exclude]
    from edgekit.data.dataset import stratified_indices

    n = min(sensitivity_samples, len(eval_x))
    subset = stratified_indices(eval_y, n, seed) if n < len(eval_x) else np.arange(len(eval_x))
    outcome.sensitivity = rank_sensitivity(backend, artifact, candidates, eval_x[subset],
                                           reference[subset], exclude)
    # Keeping every quantized layer in float would leave no int8 model: stop one short.
    limit = len(candidates) - 1
    if max_float_layers is not None:
        limit = min(limit, max(0, max_float_layers - len(exclude)))
    kept: list[str] = []
    for entry in outcome.sensitivity[: max(limit, 0)]:
        kept.append(entry["layer"])
        candidate = backend.quantize([*exclude, *kept], f"fallback-{len(kept)}")
        logits = backend.logits(candidate, eval_x)
        int8 = top1(logits, eval_y)
        drop = 100.0 * (fp32 - int8)
        held = drop <= allowed + TOLERANCE
        outcome.trials.append(Trial([*exclude, *kept], int8, drop, held, added=entry["layer"]))
        if held:
            backend.discard(outcome.artifact)
            outcome.artifact, outcome.top1, outcome.drop_points = candidate, int8, drop
            outcome.held, outcome.float_layers, outcome.logits = True, [*exclude, *kept], logits
            return outcome
        backend.discard(candidate)
    backend.discard(outcome.artifact)
    tried = len(outcome.trials) - 1
    why = ("one more would leave no layer in int8" if limit >= len(candidates) - 1
           else f"the limit of {max_float_layers} float layers was reached")
    raise GateError(
        f"int8 ({backend.runtime}) misses the accuracy budget ({budget.describe()}): fp32 top-1 "
        f"{fp32:.4f}, int8 at best {max(t.top1 for t in outcome.trials):.4f} on "
        f"{len(eval_x)} samples; kept up to {tried} of {len(candidates)} quantized layers in "
        f"float, one at a time by sensitivity, and {why}. No int8 model was written.\n"
        + trials_table(outcome.trials, allowed),
        hint="try another calibration method (--calib-method entropy|mse|minmax), a calibration "
        "set closer to the eval data, or a looser budget")
