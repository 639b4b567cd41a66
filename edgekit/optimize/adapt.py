"""The search space fitted to the model and the device before any candidate is built.

A knob that cannot apply to this model is dropped from the space with its reason, said once,
instead of failing (or, worse, being built and timed as a copy of the original) in every
candidate that uses it:

- a pruning ratio whose pruned model cannot be made (the prune pass refuses it), or that
  changes nothing (every layer kept), or that gives the same architecture as a smaller ratio
  (the device's `round_to` rounds both to the same channel counts);
- a depthwise-separable choice that substitutes no conv (the model's convs are depthwise or
  1×1 already, or `auto` finds no layer within its error bound);
- a runtime × precision pair no edgekit target (or the quantize pass, for int8) can make for
  that runtime (`buildable_targets`, derived from edgekit/kinds.py and the target registry).

The pruned and substituted models made here are the candidates' own `init` models (the
builder's cache), so nothing is built twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgekit.errors import EdgekitError
from edgekit.optimize.build import Arch, Builder, UnchangedError, runtime_target
from edgekit.optimize.space import SearchSpace


@dataclass
class Fitted:
    """The space one device searches, what was dropped from it and why, and notes (layers that
    round_to keeps whole, per ratio)."""

    space: SearchSpace
    dropped: list[dict[str, Any]] = field(default_factory=list)  # {knob, value, why}
    notes: list[str] = field(default_factory=list)


def buildable_targets(targets: list[str]) -> tuple[list[str], dict[str, str]]:
    """The 'runtime:precision' pairs optimize can make an artifact for, and why not for the
    others: fp32/fp16 by the runtime's export target (its `precisions`), int8 by the quantize
    pass (its flavours) and, for a runtime that does not read ONNX, that target after it."""
    from edgekit.passes.quantize import FLAVOURS
    from edgekit.targets.base import get_target

    flavours = tuple(FLAVOURS)  # the quantize pass's Flavour classes
    ok: list[str] = []
    why: dict[str, str] = {}
    for pair in targets:
        runtime, precision = pair.split(":")
        target, _ = runtime_target(runtime)
        if target is None:
            why[pair] = f"no edgekit export target writes what {runtime} reads"
            continue
        if precision == "int8":
            if runtime not in flavours:
                why[pair] = (f"the quantize pass has no {runtime} flavour "
                             f"(it makes int8 for {', '.join(flavours)})")
                continue
        elif precision not in get_target(target).precisions:
            why[pair] = (f"the {target} target has no {precision} precision (it writes "
                         f"{', '.join(get_target(target).precisions)})")
            continue
        ok.append(pair)
    return ok, why


def _shapes(model: Any) -> tuple[tuple[str, tuple[int, ...]], ...]:
    return tuple((k, tuple(v.shape)) for k, v in model.state_dict().items())


def _unchanged(model: Any, original: Any) -> bool:
    """Weight for weight the original (a pass that changed nothing)."""
    import torch

    mine, theirs = model.state_dict(), original.state_dict()
    return mine.keys() == theirs.keys() and all(
        mine[k].shape == theirs[k].shape and torch.equal(mine[k], theirs[k]) for k in mine)


def _planned(space: SearchSpace, builder: Builder, fitted: Fitted,
             round_to: int | None) -> dict[str, list[Any]]:
    """Each choice of a knob whose pass can tell cheaply that it would change nothing
    (`Pass.inapplicable`: dwsep's plan) dropped with that reason; a choice the plan lets
    through but that declares what changing nothing means (`Knob.unchanged`) is made once on
    the original (its init stage, which the search reuses) and dropped when it changed nothing
    (dwsep auto whose only substitutable conv fails the error check: mobilenet_v3_small,
    efficientnet_b0), not found out by the trials one by one. {knob: what is left}."""
    from edgekit.passes.base import Pass, search_knobs

    changes: dict[str, list[Any]] = {}
    for pass_cls, knob in search_knobs():
        if pass_cls.inapplicable.__func__ is Pass.inapplicable.__func__:
            continue
        kept: list[Any] = []
        for choice in getattr(space, knob.name):
            if not knob.is_off(choice):
                config = pass_cls.Config(**{knob.field: choice, **{
                    f: getattr(space, s) for s, f in knob.settings.items()}})
                why = pass_cls.inapplicable(builder.original, config)
                if not why and knob.unchanged:
                    try:
                        builder.bundle(Arch(**{knob.name: choice}), "init", round_to)
                    except UnchangedError as exc:
                        why = exc.message
                    except EdgekitError:  # cannot be made here: the trials report it
                        pass
                if why:
                    fitted.dropped.append({"knob": knob.name, "value": choice, "why": why})
                    continue
            kept.append(choice)
        if kept != list(getattr(space, knob.name)):
            changes[knob.name] = kept or [knob.off]
    return changes


def fit_space(space: SearchSpace, builder: Builder, round_to: int | None) -> Fitted:
    """Try each pruning ratio alone on the model (the builder's `init` stage: seconds) and plan
    each dwsep choice, and drop those that cannot apply, with the reason."""
    original = builder.original.model
    fitted = Fitted(space)
    where = f" with round_to {round_to}" if round_to else ""
    kept_prune: list[float] = []
    seen: dict[Any, float] = {}
    for ratio in space.prune:
        if ratio <= 0:
            kept_prune.append(ratio)
            continue
        try:
            bundle = builder.bundle(Arch(ratio, "off"), "init", round_to)
        except EdgekitError as exc:
            fitted.dropped.append({"knob": "prune", "value": ratio, "why": exc.message})
            continue
        pruning = bundle.meta.get("pruning") or {}
        shapes = _shapes(bundle.model)
        if not pruning.get("pruned") or _unchanged(bundle.model, original):
            first = next(iter(pruning.get("skipped") or []), None)
            because = f" ({first['layer']}: {first['reason']}, …)" if first else ""
            fitted.dropped.append({"knob": "prune", "value": ratio,
                                   "why": f"nothing prunable at ratio {ratio:g}{where}: every "
                                          f"layer keeps its channels{because}"})
            continue
        if shapes in seen:
            fitted.dropped.append({"knob": "prune", "value": ratio,
                                   "why": f"the same architecture as prune {seen[shapes]:g}"
                                          f"{where} (the same channel counts)"})
            continue
        seen[shapes] = ratio
        kept_prune.append(ratio)
        whole = [s for s in pruning.get("skipped") or [] if "round_to" in s["reason"]]
        if whole:
            fitted.notes.append(
                f"prune {ratio:g}: round_to {round_to} keeps {len(whole)} layer"
                f"{'s' if len(whole) > 1 else ''} whole, too narrow to keep a multiple of it "
                f"after pruning: " + ", ".join(f"{s['layer']} ({s['channels']})" for s in whole))
        fitted.notes.extend(f"prune {ratio:g}: {n}" for n in pruning.get("notes") or []
                            if "round_to" in n)
    changes: dict[str, Any] = {}
    if kept_prune != list(space.prune):
        changes["prune"] = kept_prune or [0.0]
    changes.update(_planned(space, builder, fitted, round_to))
    if changes:
        fitted.space = space.model_copy(update=changes)
    return fitted
