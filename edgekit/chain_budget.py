"""The accuracy budget of a compress chain against the ORIGINAL model: the default one (1.0
point, printed), the check after the torch steps, and every report row's drop against the
original with the step's own drop beside it."""

from __future__ import annotations

from typing import Any

# compress without --max-drop / --max-drop-rel: the chain may cost at most this many top-1
# points against the original (measured on --eval), else it fails (exit 1).
DEFAULT_MAX_DROP = 1.0


def _step_budget(steps: list[tuple[str, Any]]) -> bool:
    """Whether a step (quantize, in a recipe or the API) carries its own budget."""
    for _, config in steps:
        cfg = config if isinstance(config, dict) else getattr(config, "model_dump", dict)()
        if isinstance(cfg, dict) and (cfg.get("max_drop") is not None
                                      or cfg.get("max_drop_rel") is not None):
            return True
    return False


def default_budget(max_drop: float | None, max_drop_rel: float | None,
                   steps: list[tuple[str, Any]], eval_source: Any) -> tuple[float | None,
                                                                            float | None]:
    """The chain's budget (max_drop, max_drop_rel), said on stderr: the one given, else
    DEFAULT_MAX_DROP points against the original when there is an eval set to measure it on.
    A budget with no eval set is bad input."""
    from edgekit.errors import InputError
    from edgekit.io.models import announce

    given = max_drop is not None or max_drop_rel is not None
    if given and not eval_source:
        raise InputError("an accuracy budget (--max-drop / --max-drop-rel) needs an eval set "
                         "with labels", hint="pass --eval SOURCE, e.g. --eval fashion-mnist:test")
    if given:
        announce("budget: " + " and ".join(
            x for x in [f"{max_drop:g} points" if max_drop is not None else "",
                        f"{100 * max_drop_rel:g}% of its top-1" if max_drop_rel is not None
                        else ""] if x) + " against the original")
    elif _step_budget(steps):
        announce("budget: the quantize step's own, against the original")
    elif eval_source:
        max_drop = DEFAULT_MAX_DROP
        announce(f"budget: {DEFAULT_MAX_DROP:g} point against the original (the default; "
                 "--max-drop POINTS to change it); every drop below is against the original")
    else:
        announce("budget: not checked (no --eval to measure top-1 on; pass --eval SOURCE to "
                 f"hold the chain to {DEFAULT_MAX_DROP:g} point against the original)")
    return max_drop, max_drop_rel


def annotate_drops(rows: list[dict[str, Any]], original_top1: float | None) -> None:
    """Every row with a top-1 gets its drop against the ORIGINAL model (`drop_vs_original`, in
    points) and, beside it, what that step itself cost against the row scored before it
    (`step_drop`): an int8 model's own drop is against the fp32 model it quantized, which after
    prune/distill is not the original. Without `original_top1` (an ONNX model compressed) the
    first scored row is the original."""
    scored = [r for r in rows if r.get("top1") is not None]
    if original_top1 is None:
        if not scored:
            return
        original_top1, scored = scored[0]["top1"], scored[1:]
    elif scored and scored[0] is rows[0]:
        scored = scored[1:]
    previous = original_top1
    for row in scored:
        row["drop_vs_original"] = round(100.0 * (original_top1 - row["top1"]), 2)
        row["step_drop"] = round(100.0 * (previous - row["top1"]), 2)
        previous = row["top1"]


def chain_budget(passes: list[tuple[str, Any]], ctx: Any) -> Any:
    """The accuracy budget of the whole compress chain against the original: the run's own
    (compress --max-drop / --max-drop-rel, or the default), else the quantize step's, else
    none."""
    from edgekit.quant.budget import DropBudget

    if ctx.max_drop is not None or ctx.max_drop_rel is not None:
        return DropBudget(ctx.max_drop, ctx.max_drop_rel, ctx.original_top1)
    for _, step in passes:
        cfg = step.config
        if getattr(cfg, "max_drop", None) is not None or \
                getattr(cfg, "max_drop_rel", None) is not None:
            return DropBudget(cfg.max_drop, cfg.max_drop_rel, ctx.original_top1)
    return DropBudget(original_top1=ctx.original_top1)


def check_chain_budget(budget: Any, rows: list[dict[str, Any]]) -> None:
    """After the torch steps: the top-1 they left must be within the budget of the original's,
    or the run fails (GateError, exit 1) with what each step spent, before anything else is
    exported. Steps report top-1 in their rows; the last such row is the model as it stands."""
    from edgekit.errors import GateError

    scored = [r for r in rows if r.get("top1") is not None]
    if not budget.active or budget.original_top1 is None or len(scored) < 2:
        return
    final = scored[-1]["top1"]
    allowed = budget.total_points(budget.original_top1)
    spent = budget.spent_points(final)
    if spent <= allowed + 1e-9:
        return
    steps, previous = [], budget.original_top1
    for r in scored[1:]:
        steps.append((r["step"], r["top1"], 100.0 * (previous - r["top1"])))
        previous = r["top1"]
    worst = max(steps, key=lambda s: s[2])
    chain = " → ".join([f"original {budget.original_top1:.4f}"]
                       + [f"{name} {top1:.4f} ({-drop:+.2f})" for name, top1, drop in steps])
    raise GateError(
        f"the compression chain misses the accuracy budget ({budget.describe()} against the "
        f"original): top-1 "
        f"{final:.4f} is {spent:.2f} points under the original's {budget.original_top1:.4f}, "
        f"{allowed:g} allowed; {worst[0]} spent the most ({worst[2]:.2f} points). "
        f"Top-1 by step: {chain}",
        hint="compress less (a smaller --prune, no --dwsep or a higher --dwsep-rank), distill "
        f"longer (--distill-epochs), or loosen --max-drop (default {DEFAULT_MAX_DROP:g})")
