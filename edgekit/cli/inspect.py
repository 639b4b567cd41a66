"""`edgekit inspect MODEL`: before anything runs, what edgekit will assume and do with a model:
its architecture, its input spec and where each field came from (file / flag / preset), its
classes, MACs and parameters, which layers each pass can touch and which it leaves alone (and
why), which runtimes here can run it, and the exact next command. It only reads: nothing is
written. Built from the helpers the passes and runners use themselves (model_cost,
prune_model's report, dwsep's plan_layers, Runner.available)."""

from __future__ import annotations

import copy
import json
import shlex
from typing import Any

import click

from edgekit.cli.common import json_option, model_options, print_json

PRUNE_RATIO = 0.3  # what the report's dry run prunes (compress --prune 0.3)
MAX_RETRIES = 12  # attention layers kept one by one before the dry run gives up


def _prune_plan(bundle: Any) -> dict[str, Any]:
    """A dry run of the prune step on a copy of the model: what it prunes, what it keeps, why.
    Attention the pruner cannot trace, or whose heads it cannot remove, is kept as the error's
    hint says (--prune-ignore NAME, --prune-heads 0) and the dry run tried again, so a model
    with such attention (timm's MobileViT) still shows what prune does to the rest; the flags
    join the next command."""
    import re

    from edgekit.errors import InputError
    from edgekit.passes.prune import PruneOptions, prune_model

    ignore: list[str] = []
    head_ratio: float | None = None
    kept: list[dict[str, str]] = []
    for _ in range(MAX_RETRIES):
        try:
            result = prune_model(copy.deepcopy(bundle.model), bundle.spec, ratio=PRUNE_RATIO,
                                 options=PruneOptions(ignore=tuple(ignore),
                                                      head_ratio=head_ratio))
            break
        except InputError as exc:
            hint = exc.hint or ""
            named = re.search(r"--prune-ignore '([^']+)'", hint)
            if head_ratio is None and "--prune-heads 0" in hint:
                head_ratio = 0.0
                kept.append({"layer": named.group(1) if named else "attention",
                             "reason": "every attention layer keeps its heads "
                             f"(--prune-heads 0): {exc.message}"})
            elif named and named.group(1) not in ignore:
                ignore.append(named.group(1))
                kept.append({"layer": named.group(1),
                             "reason": f"kept whole (--prune-ignore): {exc.message}"})
            else:
                return {"applies": False, "reason": exc.message, "hint": exc.hint,
                        **({"leaves": kept} if kept else {})}
        except Exception as exc:  # noqa: BLE001 - the pruner failed: said, inspect goes on
            return {"applies": False, "reason": f"the pruner failed: {type(exc).__name__}: "
                    f"{str(exc).splitlines()[0][:300] if str(exc) else ''}"}
    else:
        return {"applies": False, "reason": f"still refused after keeping {', '.join(ignore)}",
                "leaves": kept}
    flags = (["--prune-heads", "0"] if head_ratio == 0.0 else []) + \
        [x for name in ignore for x in ("--prune-ignore", name)]
    # Device profiles round channels to 8 (optimize's space): a layer left with fewer than 8
    # can empty. None can when every layer pruned keeps 2 x 8 before rounding: the second dry
    # run (another dependency graph: ~110 s for densenet201) is then not needed.
    narrow = [r for r in result.pruned
              if not isinstance(r.get("before"), int) or r["before"] * (1 - PRUNE_RATIO) < 16]
    if not result.pruned:
        rounded = "prunes nothing"
    elif not narrow:
        rounded = "prunes (every layer pruned keeps at least 16 channels before rounding)"
    else:
        rounded = _round_to_8(bundle, ignore, head_ratio)
    return {"applies": bool(result.pruned), "ratio": PRUNE_RATIO,
            "touches": [r["layer"] for r in result.pruned],
            "leaves": kept + [{"layer": r["layer"], "reason": r["reason"]}
                              for r in result.skipped],
            "notes": result.notes, "round_to_8": rounded, "flags": flags}


def _round_to_8(bundle: Any, ignore: list[str], head_ratio: float | None) -> str:
    """The prune dry run again with round_to 8: which layers it keeps whole, or its refusal."""
    from edgekit.passes.prune import PruneOptions, prune_model

    try:
        at8 = prune_model(copy.deepcopy(bundle.model), bundle.spec, ratio=PRUNE_RATIO,
                          options=PruneOptions(round_to=8, ignore=tuple(ignore),
                                               head_ratio=head_ratio))
    except Exception as exc:  # noqa: BLE001 - InputError (a wiped-out layer) or the pruner's own
        return f"refused: {getattr(exc, 'message', str(exc))[:300]}"
    whole = [r["layer"] for r in at8.skipped if "round_to" in r.get("reason", "")]
    return "prunes" + (f"; keeps whole (too narrow for round_to 8): {', '.join(whole)}"
                       if whole else "")


def _dwsep_plan(bundle: Any) -> dict[str, Any]:
    from edgekit.errors import InputError
    from edgekit.passes.dwsep import DwsepConfig, plan_layers

    try:
        plans = plan_layers(bundle.model, bundle.spec, DwsepConfig())
    except InputError as exc:
        return {"applies": False, "reason": exc.message}
    except Exception as exc:  # noqa: BLE001 - said, inspect goes on
        return {"applies": False, "reason": f"dwsep cannot plan: {type(exc).__name__}"}
    touches = [p.name for p in plans if p.replace]
    return {"applies": bool(touches), "touches": touches,
            "leaves": [{"layer": p.name, "reason": p.reason} for p in plans if not p.replace],
            **({} if touches else {"reason": "no conv to substitute"})}


def _runtimes() -> list[dict[str, Any]]:
    """Each runtime edgekit has, whether it runs here, and the file kind it reads."""
    from edgekit import kinds
    from edgekit.runtimes.base import get_runner, runner_names

    rows = []
    for name in runner_names():
        ok, reason = get_runner(name).available()
        reads = list(kinds.formats_read_by(name))
        rows.append({"runtime": name, "available": ok, "reads": reads,
                     **({} if ok else {"reason": reason})})
    return rows


def _preprocessing_flags(spec: Any, provenance: dict[str, str]) -> list[str]:
    """The flags that reproduce this spec (none when the file records it)."""
    if all(v == "file" for v in provenance.values()):
        return []
    flags = ["--input-shape", ",".join(map(str, spec.shape)),
             "--mean", ",".join(f"{v:g}" for v in spec.mean),
             "--std", ",".join(f"{v:g}" for v in spec.std)]
    if spec.resize:
        flags += ["--resize", str(spec.resize)]
    if spec.channel_order != "RGB":
        flags += ["--channel-order", spec.channel_order]
    return flags


def _load(model: str, arch: str | None, arch_kwargs: str | None,
          input_shape: tuple[int, ...] | None, trust_model: bool) -> tuple[Any, str | None, Any]:
    """(bundle, arch, arch_kwargs): a plain state_dict without --arch is matched against
    torchvision's classification models and timm's (edgekit.io.archmatch; the first of several
    matches, the others named), and a model that does not record its preprocessing is refused
    with every flag still missing at once (the matched --arch/--arch-kwargs, the preprocessing)
    and the command to run next with them."""
    from edgekit.cli.common import load_model_from_options
    from edgekit.errors import MissingArchError, MissingPreprocessingError, ModelLoadError

    try:
        return load_model_from_options(model, arch, arch_kwargs, input_shape, trust_model), \
            arch, arch_kwargs
    except MissingArchError as exc:
        if arch is not None:
            raise
        from edgekit.io.archmatch import match_file

        matches = getattr(exc, "arch_matches", None)
        matches = match_file(model) if matches is None else matches
        if not matches:
            raise
        arch, kwargs = matches[0]  # the others (same keys and shapes) are named in the error
        arch_kwargs = json.dumps(kwargs) if kwargs else None
        flags = _arch_flags(arch, kwargs)
        also = (" (so do " + ", ".join(a for a, _ in matches[1:]) + ": pass that --arch "
                "instead if the model was built with it)") if len(matches) > 1 else ""
        try:
            bundle = load_model_from_options(model, arch, arch_kwargs, input_shape, trust_model)
            click.echo(f"architecture: matched by its keys and shapes: {flags}{also}", err=True)
            return bundle, arch, arch_kwargs
        except MissingPreprocessingError as missing:
            todo = missing.flags
            given = _given_flags(input_shape)
            run = " ".join(x for x in (shlex.quote(model), flags, given.strip(), todo) if x)
            raise ModelLoadError(
                f"{model} is a plain state_dict whose every key and shape matches {flags}{also}, "
                f"and it does not record its preprocessing: edgekit does not know {missing.lacks}, "
                "and guessing would make every accuracy wrong",
                hint=f"pass {flags} and " + missing.hint.removeprefix("pass ")
                + f"; next: edgekit optimize {run} --train TRAIN_DATA --eval EVAL_DATA "
                "-o out/ (or first `edgekit inspect` with these flags: what each pass will do)"
            ) from None


def _given_flags(input_shape: tuple[int, ...] | None) -> str:
    """The preprocessing flags this command was given, as they are typed."""
    from edgekit.io.models import current_preprocessing

    flags = [f"--input-shape {','.join(map(str, input_shape))}"] if input_shape else []
    for key, value in current_preprocessing().items():
        text = ",".join(f"{v:g}" for v in value) if isinstance(value, tuple | list) else value
        flags.append(f"--{'preprocessing' if key == 'preset' else key.replace('_', '-')} "
                     + shlex.quote(str(text)))
    return " ".join(flags)


def _arch_flags(arch: str, kwargs: dict[str, Any]) -> str:
    from edgekit.io.archmatch import arch_flags

    return arch_flags(arch, kwargs)


def inspect_model(model: str, arch: str | None, arch_kwargs: str | None,
                  input_shape: tuple[int, ...] | None, trust_model: bool) -> dict[str, Any]:
    import torch

    from edgekit.passes.stats import model_cost
    from edgekit.preprocessing import describe_provenance

    bundle, arch, arch_kwargs = _load(model, arch, arch_kwargs, input_shape, trust_model)
    with torch.no_grad():
        outputs = int(bundle.model(torch.zeros(bundle.spec.shape)).shape[-1])
    cost = model_cost(bundle.model, bundle.spec)
    load = [shlex.quote(model)]
    if arch:
        load += ["--arch", arch]
    if arch_kwargs:
        load += ["--arch-kwargs", shlex.quote(arch_kwargs if isinstance(arch_kwargs, str)
                                              else json.dumps(arch_kwargs))]
    load += _preprocessing_flags(bundle.spec, bundle.provenance)
    prune, dwsep = _prune_plan(bundle), _dwsep_plan(bundle)
    steps = (["--prune", str(PRUNE_RATIO), *map(shlex.quote, prune["flags"])]
             if prune["applies"] else []) + \
        (["--dwsep"] if dwsep["applies"] else [])
    next_command = " ".join(["edgekit", "compress", *load, *steps, "--train", "TRAIN_DATA",
                             "--eval", "EVAL_DATA", "--int8", "-o", "out/"])
    return {
        "model": str(model), "arch": bundle.arch, "arch_kwargs": bundle.arch_kwargs,
        "class": type(bundle.model).__name__,
        "input_spec": bundle.spec.model_dump(mode="json"),
        "provenance": bundle.provenance,
        "preprocessing": describe_provenance(bundle.spec, bundle.provenance),
        "classes": {"count": outputs, "names": list(bundle.spec.class_names)},
        "macs": cost["macs"], "params": cost["params"],
        "passes": {"prune": prune, "dwsep": dwsep,
                   "distill": {"applies": True, "needs": "--train data (labels not needed)"},
                   "quantize": {"applies": True, "needs": "--calib data (default: --train)"}},
        "runtimes": _runtimes(),
        "next": next_command,
    }


def _print(report: dict[str, Any]) -> None:
    echo = click.echo
    echo(f"model: {report['model']} ({report['arch'] or report['class']})")
    names = report["classes"]["names"]
    echo(f"classes: {report['classes']['count']}" + (f" ({', '.join(names)})" if names else ""))
    echo(f"cost: {report['macs'] / 1e6:.1f} M MACs, {report['params'] / 1e6:.3f} M parameters "
         f"at {report['input_spec']['shape'][2]}x{report['input_spec']['shape'][3]}")
    for name, plan in report["passes"].items():
        if "touches" in plan or "reason" in plan:
            head = (f"{name}: touches {len(plan.get('touches', []))} layers, leaves "
                    f"{len(plan.get('leaves', []))}") if plan["applies"] else \
                f"{name}: does not apply: {plan.get('reason')}"
            echo(head)
            if "round_to_8" in plan:
                echo(f"  with round_to 8 (device profiles): {plan['round_to_8']}")
            for leave in plan.get("leaves", [])[:8]:
                echo(f"  leaves {leave['layer']}: {leave['reason']}")
            if len(plan.get("leaves", [])) > 8:
                echo(f"  ... and {len(plan['leaves']) - 8} more (--json lists them all)")
        else:
            echo(f"{name}: applies; needs {plan['needs']}")
    for row in report["runtimes"]:
        state = "runs here" if row["available"] else f"not here: {row['reason']}"
        echo(f"runtime {row['runtime']}: {state}")
    echo(f"next: {report['next']}")


@click.command()
@click.argument("model", type=click.Path())
@model_options
@json_option
def inspect(model: str, arch: str | None, arch_kwargs: str | None, input_shape,
            trust_model: bool, as_json: bool) -> None:
    """What edgekit will assume and do with MODEL, before anything runs: architecture, input
    spec and where each field came from, classes, MACs and parameters, which layers each pass
    touches or leaves (and why), the runtimes here, and the next command. Writes nothing."""
    report = inspect_model(model, arch, arch_kwargs, input_shape, trust_model)
    if as_json:
        print_json(report)
    else:
        _print(report)
