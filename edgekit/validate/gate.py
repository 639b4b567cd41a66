"""The accuracy gate: does an artifact, measured on its target runtime, meet the budget?

Checks (each only when configured, except finiteness, which always applies):
  outputs finite        NaN or Inf anywhere in the logits fails, whatever the top-1 says;
  max_drop              top-1 drop against the fp32 reference, in percentage points;
  max_drop_rel          relative drop: 0.01 means the artifact keeps at least 99% of fp32 top-1;
  min_agreement         fraction of samples whose top-1 class equals the reference's;
  min_cosine            mean cosine similarity of logits with the reference's;
  max_abs_diff          largest absolute logit difference with the reference;
  min_speedup           p50 speed-up against the fp32 original measured in the same run on the
                        same runtime, device and batch (1.0: never slower than the original),
                        checked at every batch size measured. With both runs' samples the
                        speed-up has a confidence interval (runtimes/speedup.py): it fails only
                        when the whole interval lies below the limit; an interval across it is
                        `indistinguishable` (passed, with a note giving both numbers).
A check that needs a number the record does not have (no labels, no reference) fails and says
why: a gate that cannot be evaluated has not been passed.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field

from edgekit.metrics import TOLERANCE
from edgekit.results.record import AccuracySection, GateCheck, GateVerdict, SpeedupSection
from edgekit.results.validation import PRECISION_RANK, describe_budget, pick_decisive
from edgekit.runtimes.interference import disturbed_suffix

__all__ = ["PRECISION_RANK", "Budget", "evaluate_gate", "pick_decisive"]


class Budget(BaseModel):
    """What an artifact must achieve against the fp32 reference to pass (finite numbers only:
    a NaN limit would compare false and pass or fail everything silently)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    max_drop: float | None = Field(None, ge=0, description="top-1 drop allowed, in points")
    max_drop_rel: float | None = Field(None, ge=0, lt=1,
                                       description="relative top-1 drop allowed (0.01 = 1%)")
    min_agreement: float | None = Field(None, ge=0, le=1,
                                        description="top-1 agreement with the reference")
    min_cosine: float | None = Field(None, ge=-1, le=1, description="mean logit cosine similarity")
    max_abs_diff: float | None = Field(None, ge=0, description="largest absolute logit difference")
    min_speedup: float | None = Field(None, gt=0, description="p50 speed-up against the fp32 "
                                      "original on the same runtime, device and batch (1.0: "
                                      "never slower than the original)")

    def describe(self) -> str:
        return describe_budget(self.model_dump())


def _check(name: str, value: float | None, limit: float, higher_is_better: bool,
           missing: str) -> GateCheck:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return {"check": name, "value": None, "limit": limit, "passed": False, "reason": missing}
    # Drops are differences of ratios: 100 * (0.9 - 0.895) is 0.5000000000000004.
    ok = value >= limit - TOLERANCE if higher_is_better else value <= limit + TOLERANCE
    op = "≥" if higher_is_better else "≤"
    return {"check": name, "value": value, "limit": limit, "passed": bool(ok),
            "reason": "" if ok else f"{name} {value:.4g} not {op} {limit:g}"}


def speedup_section(p50_ms: float | None, reference_p50_ms: float | None, *, batch: int,
                    reference: str, runtime: str, samples_ms: list[float] | None = None,
                    reference_samples_ms: list[float] | None = None,
                    confidence: float = 0.99) -> SpeedupSection:
    """A record's speed-up against the fp32 original (same runtime, device, batch): ratio of
    the p50s, > 1 is faster. `speedup` is None when either p50 is missing. With both runs'
    samples it carries the interval too (`ci_low`, `ci_high`, `confidence`, `method`: see
    runtimes/speedup.py), which the gate judges instead of the bare ratio."""
    ok = bool(p50_ms and reference_p50_ms)
    section: SpeedupSection = {"speedup": (reference_p50_ms / p50_ms) if ok else None,
                               "batch": batch, "p50_ms": p50_ms,
                               "reference_p50_ms": reference_p50_ms, "reference": reference,
                               "runtime": runtime}
    if ok and samples_ms and reference_samples_ms:
        from edgekit.runtimes.speedup import speedup_interval

        interval = speedup_interval(samples_ms, reference_samples_ms, confidence=confidence)
        section.update({k: interval[k] for k in ("ci_low", "ci_high", "confidence", "method")})
    return section


def _speed_check(speed: SpeedupSection, limit: float) -> GateCheck:
    """Fails only when the speed-up is below `limit` beyond noise: with an interval, when all of
    it lies below (between: `indistinguishable`, passed and said so); without, the bare ratio."""
    from edgekit.runtimes.speedup import describe, verdict

    name = f"speedup_b{speed.get('batch')}"
    value = speed.get("speedup")
    if value is None:
        return {"check": name, "value": None, "limit": limit, "passed": False,
                "reason": speed.get("missing") or f"batch {speed.get('batch')}: no fp32 original "
                f"measured on {speed.get('runtime')} in this run to compare with"}
    has_ci = speed.get("ci_low") is not None and speed.get("ci_high") is not None
    interval = speed if has_ci else {"speedup": value, "ci_low": value, "ci_high": value}
    outcome = verdict(interval, limit)
    ok = outcome != "slower"
    p50, ref = speed["p50_ms"], speed["reference_p50_ms"]
    numbers = f"{describe(interval)} < {limit:g}×" if has_ci else f"{value:.2f}× < {limit:g}×"
    if ok:
        reason = ""
    elif p50 > ref:
        reason = (f"batch {speed['batch']}: {p50:.3f} ms, slower than the original's {ref:.3f} ms "
                  f"({numbers})")
    else:
        reason = (f"batch {speed['batch']}: {p50:.3f} ms against the original's {ref:.3f} ms, "
                  f"{numbers if has_ci else 'speed-up ' + numbers}")
    check = {"check": name, "value": value, "limit": limit, "passed": bool(ok), "reason": reason}
    if has_ci:
        check.update(verdict=outcome, ci_low=speed["ci_low"], ci_high=speed["ci_high"])
        if outcome == "indistinguishable":
            check["note"] = (f"batch {speed['batch']}: {p50:.3f} ms against the original's "
                             f"{ref:.3f} ms, indistinguishable from {limit:g}× "
                             f"({describe(interval)})")
    if speed.get("disturbed"):  # (issue 18) never a ratio from a disturbed run without the mark
        check["disturbed"] = speed["disturbed"]
        if reason:
            check["reason"] = reason + disturbed_suffix(True)
    return check


def evaluate_gate(accuracy: AccuracySection, budget: Budget,
                  speed: list[SpeedupSection] | None = None) -> GateVerdict:
    """The gate verdict for one artifact on one runtime: its accuracy section and, for
    `min_speedup`, its speed-up sections (one per batch, from `speedup_section`):
    {passed, checks, reasons, budget}."""
    checks: list[GateCheck] = []
    finite = bool(accuracy.get("outputs_finite", False))
    checks.append({"check": "outputs_finite", "value": finite, "limit": True, "passed": finite,
                   "reason": "" if finite else "NaN or Inf in the outputs"})
    no_ref = "no fp32 reference to compare with"
    no_top1 = "no top-1 (the eval set has no labels, or no reference top-1)"
    top1, ref_top1 = accuracy.get("top1"), accuracy.get("reference_top1")
    fid = accuracy.get("fidelity") or {}
    if budget.max_drop is not None:
        checks.append(_check("top1_drop_points", accuracy.get("top1_drop_points"),
                             budget.max_drop, False, no_top1))
    if budget.max_drop_rel is not None:
        rel = None
        if top1 is not None and ref_top1:
            rel = (ref_top1 - top1) / ref_top1
        checks.append(_check("top1_drop_rel", rel, budget.max_drop_rel, False, no_top1))
    if budget.min_agreement is not None:
        checks.append(_check("top1_agreement", fid.get("top1_agreement"), budget.min_agreement,
                             True, no_ref))
    if budget.min_cosine is not None:
        checks.append(_check("cosine", fid.get("cosine"), budget.min_cosine, True, no_ref))
    if budget.max_abs_diff is not None:
        checks.append(_check("max_abs_diff", fid.get("max_abs_diff"), budget.max_abs_diff, False,
                             no_ref))
    if budget.min_speedup is not None:
        if not speed:
            checks.append({"check": "speedup", "value": None, "limit": budget.min_speedup,
                           "passed": False, "reason": "no latency against the fp32 original "
                           "measured in this run"})
        checks += [_speed_check(s, budget.min_speedup) for s in speed or []]
    reasons = [c["reason"] for c in checks if not c["passed"]]
    verdict = {"passed": not reasons, "checks": checks, "reasons": reasons,
               "budget": budget.model_dump(exclude_none=True)}
    notes = [c["note"] for c in checks if c.get("note")]
    if notes:  # passed, but only because the difference is within the noise
        verdict["notes"] = notes
    return verdict
