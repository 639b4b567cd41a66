"""`edgekit optimize`: the fastest model that keeps accuracy on each device, from milliseconds
measured there (edgekit.optimize)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from edgekit.cli.common import (
    DROP,
    SPEEDUP,
    data_dir_option,
    json_option,
    model_options,
    print_json,
    train_options,
)

if TYPE_CHECKING:  # pragma: no cover
    from edgekit.optimize.records import Candidate, DeviceResult, OptimizeSummary

# the space's flags besides one per searchable pass field (Pass.search: --prune, --dwsep)
SPACE_FLAGS = ("runtimes", "precisions", "fallback", "batch")


def space_flags() -> tuple[str, ...]:
    from edgekit.optimize.space import knobs

    return (*(k.name for k in knobs()), *SPACE_FLAGS)


class KnobCommand(click.Command):
    """`edgekit optimize` with one `--NAME` option per searchable field of a registered pass
    (`Pass.search`), added when the command line is parsed or its help shown: the passes import
    torch, and `edgekit --help` does not need them."""

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        from edgekit.passes.base import search_knobs

        params = super().get_params(ctx)
        have = {p.name for p in params}
        knobs = [click.Option([f"--{knob.name}"], default=None, help=(
            f"Choices to try of the {pass_cls.name} pass's {knob.field}, e.g. "
            f"{','.join(knob.label(v) for v in knob.default)} ({knob.help})."))
            for pass_cls, knob in search_knobs() if knob.name not in have]
        at = next((i for i, p in enumerate(params) if p.name == "runtimes"), len(params))
        return params[:at] + knobs + params[at:]


def _duration(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """--time-budget: a finite duration (30m, 1h, 90s) of at most a year."""
    if value is None:
        return None
    import math

    from edgekit.errors import ConfigError
    from edgekit.optimize.space import parse_duration

    try:
        seconds = parse_duration(value)
    except ConfigError as exc:
        raise click.BadParameter(f"{exc.message} ({exc.hint})") from None
    if not math.isfinite(seconds) or not 0 < seconds <= 366 * 86400:
        raise click.BadParameter(f"{value[:40]!r} is not a time budget between 1 s and a year",
                                 param_hint="--time-budget")
    return value


def _words(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def settings_from(flags: dict[str, Any], base: dict[str, Any] | None):
    """OptimizeSettings from a space file or recipe section (`base`) and the flags set."""
    from edgekit.config import parse_as
    from edgekit.optimize.space import OptimizeSettings, knobs

    data = dict(base or {})
    for knob in knobs():  # --prune 0,0.25 --dwsep off,auto: each read by its knob
        if flags.get(knob.name) is not None:
            try:
                data[knob.name] = [knob.parse(v) for v in _words(flags[knob.name])]
            except ValueError:
                raise click.BadParameter(f"{flags[knob.name]!r} is not a comma-separated list "
                                         f"of {knob.name} choices ({knob.help})") from None
    for key, flag in (("runtimes", "runtimes"), ("precisions", "precisions"),
                      ("int8_fallback", "fallback")):
        if flags.get(flag) is not None:
            data[key] = _words(flags[flag])
    if flags.get("batch") is not None:
        data["batch"] = flags["batch"]
    for key in ("trials", "time_budget", "min_speedup", "seed"):
        if flags.get(key) is not None:
            data[key] = flags[key]
    return parse_as(OptimizeSettings, data, "optimize settings")


@click.command(cls=KnobCommand)
@click.argument("model", required=False, type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="Output folder: out/<device>/ gets each device's winner.")
@click.option("--recipe", type=click.Path(dir_okay=False), default=None,
              help="Take the model, data, devices, budget and search space (its `optimize:` "
              "section) from a recipe.")
@click.option("--trust-recipe", is_flag=True,
              help="Let --recipe name any module:factory as model.arch and set "
              "model.trust_model (both run code the recipe chose). Only for recipes you trust.")
@click.option("--device", "devices", multiple=True,
              help="Device profile name or file (repeatable; default local-cpu). Devices are "
              "searched at once; local profiles take turns on this machine.")
@click.option("--fleet", "fleet_file", type=click.Path(dir_okay=False), default=None,
              help="A fleet file (devices/fleet-*.yaml): its devices, with --device's.")
@click.option("--cluster", default=None,
              help="Measure every candidate as a Ray task on the node that owns its device "
              "(ray://HOST:10001, HOST:6379 or auto); a private network only.")
@click.option("--allow-public-cluster", is_flag=True,
              help="Allow a --cluster address that is not private (Ray has no authentication).")
@click.option("--train", "train_source", default=None, help="Training data (distillation).")
@click.option("--eval", "eval_source", default=None, help="Labelled eval data for top-1.")
@click.option("--eval-limit", type=int, default=None, help="Stratified sample of the eval set.")
@click.option("--calib", "calib_source", default=None, help="Calibration set for int8.")
@click.option("--max-drop", type=DROP, default=None,
              help="Allowed top-1 drop against the original, in points (default 1.0).")
@click.option("--min-speedup", type=SPEEDUP, default=None,
              help="The winner is at least this much faster than the fp32 original on its "
              "fastest runtime (default 1.0: never slower).")
@click.option("--time-budget", default=None, callback=_duration,
              help="Wall time for the search, e.g. 30m, 1h.")
@click.option("--trials", type=click.IntRange(min=1), default=None,
              help="Candidates per device, the originals included (default 24).")
@click.option("--seed", type=int, default=None, help="Seed of the sampler and of distillation.")
@click.option("--space", "space_file", type=click.Path(dir_okay=False), default=None,
              help="Search space (YAML, the fields of a recipe's `optimize:` section).")
@click.option("--runtimes", default=None, help="Runtimes to try (default: the profile's).")
@click.option("--precisions", default=None, help="Precisions to try, e.g. fp32,fp16,int8.")
@click.option("--fallback", default=None,
              help="int8 float-fallback sets: none,first-conv,depthwise,first-conv+depthwise.")
@click.option("--batch", type=click.IntRange(min=1), default=None,
              help="Batch the latency is measured at (default: the profile's smallest).")
@train_options
@model_options
@data_dir_option
@json_option
def optimize(model: str | None, output: str, recipe: str | None, trust_recipe: bool,
             devices: tuple[str, ...],
             fleet_file: str | None, cluster: str | None, allow_public_cluster: bool,
             train_source: str | None, eval_source: str | None, eval_limit: int | None,
             calib_source: str | None, max_drop: float | None, space_file: str | None,
             data_dir: str | None, arch: str | None, arch_kwargs: str | None, input_shape,
             trust_model: bool, as_json: bool, train_settings: Any, **flags: Any) -> None:
    """Search for the fastest artifact of MODEL that keeps its accuracy, on each device:
    candidates (pruning, depthwise-separable, runtime, precision, int8 fallbacks) measured
    there, the Pareto front of latency against top-1, and the winner in OUT/<device>/."""
    from edgekit.errors import InputError

    check_flags(model, recipe, space_file, flags)
    if cluster:  # a public or silent cluster address: refused before anything is written
        from edgekit.executors import check_cluster_address

        check_cluster_address(cluster, allow_public=allow_public_cluster)
    from edgekit.devices import load_profile

    base: dict[str, Any] | None = None
    bundle = None
    if recipe:
        checkpoint, base, profiles, data = recipe_inputs(recipe, data_dir, trust=trust_recipe)
        train_source = train_source or data["train"]
        eval_source = eval_source or data["eval"]
        calib_source = calib_source or data["calib"]
        eval_limit = eval_limit or data["eval_limit"]
        max_drop = data["max_drop"] if max_drop is None else max_drop
        train_settings = train_settings or data["training"]
        profiles = [load_profile(d) for d in devices] if devices or fleet_file else profiles
    else:
        if space_file:
            from edgekit.config import read_yaml

            base = read_yaml(space_file) or {}
            if not isinstance(base, dict):
                raise InputError(f"{space_file} is not a mapping of search-space fields",
                                 hint="e.g. `prune: [0, 0.3]`")
        from edgekit.cli.common import load_model_from_options

        bundle = load_model_from_options(model, arch, arch_kwargs, input_shape, trust_model)
        checkpoint = Path(model)
        profiles = [load_profile(d) for d in devices or (() if fleet_file else ("local-cpu",))]
    settings = settings_from(flags, base)
    from edgekit.data.given import data_sources
    from edgekit.fleetfile import fleet_device, load_fleet
    from edgekit.optimize.job import optimizer_for, run_optimizer

    fleet = (load_fleet(fleet_file) if fleet_file else []) + [fleet_device(p) for p in profiles]
    data = data_sources({"train": train_source, "eval": eval_source, "calib": calib_source,
                         "data_dir": data_dir, "eval_limit": eval_limit}, "the data flags")
    optimizer = optimizer_for(checkpoint, fleet, settings, output, data, max_drop=max_drop,
                              bundle=bundle, cluster=cluster, train=train_settings,
                              allow_public_cluster=allow_public_cluster)
    optimizer.live_progress = not as_json  # --json: the plan lines only, no live bar
    summary = run_optimizer(optimizer)
    if as_json:
        print_json(summary)
    else:
        print_summary(summary)
        print_next(summary, profiles, devices, eval_source)
    if not summary["passed"]:
        raise failure(summary)


def check_flags(model: str | None, recipe: str | None, space_file: str | None,
                flags: dict[str, Any]) -> None:
    """Refuse contradicting flags before anything is loaded or written (exit 2)."""
    from edgekit.errors import InputError

    inline = [f"--{f}" for f in space_flags() if flags.get(f) is not None]
    if model and recipe:
        raise InputError("give a MODEL or --recipe, not both",
                         hint="the recipe names its model; drop MODEL or --recipe")
    if not model and not recipe:
        raise InputError("no model given", hint="edgekit optimize MODEL.pt -o OUT/ (or --recipe R)")
    if space_file and recipe:
        raise InputError("--space and --recipe both give a search space",
                         hint="edit the recipe's `optimize:` section, or drop --recipe")
    if space_file and inline:
        raise InputError(f"--space and {', '.join(inline)} both set the search space",
                         hint="put everything in the space file, or use the flags alone")
    if flags["min_speedup"] is not None and flags["min_speedup"] <= 0:
        raise InputError(f"--min-speedup {flags['min_speedup']:g} is not positive",
                         hint="1.0 means never slower than the original")
    precisions = [p.strip() for p in (flags.get("precisions") or "").split(",") if p.strip()]
    if flags.get("fallback") is not None and precisions and "int8" not in precisions:
        raise InputError(f"--fallback {flags['fallback']} keeps layers float in int8 models, "
                         f"and --precisions {flags['precisions']} has no int8",
                         hint="add int8 to --precisions, or drop --fallback (the set needs int8)")


def print_next(summary: OptimizeSummary, profiles: list[Any], devices: tuple[str, ...],
               eval_source: str) -> None:
    """Per device with a winner, the command that validates it (what the user runs next)."""
    from shlex import quote

    named = dict(zip([p.name for p in profiles], devices, strict=False))
    for name, result in summary["devices"].items():
        if result.get("winner"):
            click.echo(f"next: edgekit validate {quote(str(Path(result['winner']['path']).parent))}"
                       f" --eval {quote(eval_source)} --device {quote(named.get(name, name))}")


def failure(summary: OptimizeSummary):
    """The GateError (exit 1) for a search that found nothing within budget on some device, or
    lost a device before it finished."""
    from edgekit.errors import GateError

    parts = []
    for name, result in summary["devices"].items():
        if result.get("lost"):
            parts.append(f"{name}: the search stopped, {result['lost']} (the partial front is "
                         "kept; rerun the same command to resume)")
        elif not result.get("winner"):
            best = ", ".join(result.get("best_tried") or ["none"])
            parts.append(f"{name}: nothing meets the budget ({result['why']}); best tried: {best}")
    return GateError("; ".join(parts),
                     hint="allow a larger --max-drop, a longer distillation or more trials; "
                          "rerun to resume a stopped search")


def optimize_recipe(recipe_path: str | Path, out_dir: str | Path,
                    data_dir: str | None = None) -> OptimizeSummary:
    """`edgekit optimize --recipe R -o OUT` as a function (what `edgekit demo` runs)."""
    from edgekit.optimize.search import Optimizer

    checkpoint, base, profiles, data = recipe_inputs(str(recipe_path), data_dir)
    settings = settings_from(dict.fromkeys((*space_flags(), "trials", "time_budget",
                                            "min_speedup", "seed")), base)
    return Optimizer(checkpoint, profiles, settings, out_dir=out_dir, eval_source=data["eval"],
                     max_drop=data["max_drop"], train_source=data["train"],
                     calib_source=data["calib"], eval_limit=data["eval_limit"],
                     data_dir=data_dir, train=data["training"]).run()


def recipe_inputs(recipe_path: str, data_dir: str | None, *, trust: bool = False):
    """(checkpoint, optimize settings as given, device profiles, data) of a recipe (`trust`:
    --trust-recipe, edgekit.recipe)."""
    from edgekit.errors import ConfigError
    from edgekit.recipe import device_profile, load_recipe, resolve_path
    from edgekit.recipe_run import model_checkpoint

    recipe = load_recipe(recipe_path, trust=trust)
    if recipe.optimize is None:
        raise ConfigError(f"{recipe_path} has no `optimize:` section",
                          hint="add `optimize: {prune: [0, 0.3], dwsep: [off]}` (or {} for the "
                               "defaults)")
    checkpoint = model_checkpoint(recipe, Path(recipe_path), data_dir)
    profiles = [device_profile(ref, where=f"{recipe_path}: devices[{i}]")
                for i, ref in enumerate(recipe.devices)]

    def data(value):
        return resolve_path(value, recipe_path) if value else None

    settings = recipe.optimize.model_dump(mode="json", exclude_unset=True)
    return checkpoint, settings, profiles, {
        "train": data(recipe.data.train), "eval": data(recipe.data.eval),
        "calib": data(recipe.data.calib), "eval_limit": recipe.data.eval_limit,
        "max_drop": recipe.budget.max_drop if recipe.budget.max_drop is not None else 1.0,
        "training": recipe.training}


OPT_COLUMNS = ("candidate", "status", "p50 ms", "speed-up", "top-1 %", "Δ top-1", "cost s",
               "front", "why")
OPT_NARROW = ("candidate", "status", "p50 ms", "speed-up", "Δ top-1", "front", "why")


def _ci(c: Candidate) -> str:
    """' (0.95–1.08)': the speed-up's interval, when it is one; '~' marks a tie within noise."""
    ci = c.get("speedup_ci")  # of the two runs, as the speed-up beside it (the winner's
    # confirmation in alternating rounds is in the why below the table)
    if not ci or ci[0] == ci[1]:
        return ""
    return f" ({ci[0]:.2f}–{ci[1]:.2f})" + ("~" if c.get("speed_verdict") == "indistinguishable"
                                           else "")


def _cells(c: Candidate) -> list[str]:
    from edgekit.runtimes.interference import disturbed_suffix

    def num(v: Any, fmt: str) -> str:
        return format(v, fmt) if isinstance(v, int | float) else "-"

    mark = "◆ winner" if c.get("winner") else ("★" if c.get("on_front") else "")
    drop = c.get("drop_points")
    return [c["name"], c["status"], num(c.get("p50_ms"), ".3f"),
            num(c.get("speedup"), ".2f") + ("×" if c.get("speedup") else "") + _ci(c)
            + disturbed_suffix(c.get("speedup") and c.get("speedup_disturbed"), short=True),
            num(c.get("top1"), ".2f"), num(None if drop is None else 0.0 - drop, "+.2f"),
            num((c.get("cost") or {}).get("total_s"), ".1f"), mark, c.get("why", "")]


def print_summary(summary: OptimizeSummary) -> None:
    from edgekit.results.table import _print_table

    for name, result in summary["devices"].items():
        rows = sorted(result["candidates"], key=lambda c: (c.get("p50_ms") is None,
                                                           c.get("p50_ms") or 0))
        _print_table(OPT_COLUMNS, [_cells(c) for c in rows],
                     f"edgekit optimize {summary['model']} on {name} (batch {result['batch']})",
                     narrow=OPT_NARROW)
        for d in result.get("dropped") or []:
            click.echo(f"{name}: {d['knob']} {d['value']} dropped from the space: {d['why']}")
        for note in result.get("notes") or []:
            click.echo(f"{name}: {note}")
        if result.get("lost"):
            click.echo(f"{name}: device lost mid-search ({result['lost']}); the partial front "
                       "is kept and a rerun resumes")
        if result["winner"]:
            w = result["winner"]
            click.echo(f"{name}: winner {w['name']} -> {w['path']}\n  why: {result['why']}")
        else:
            click.echo(f"{name}: nothing meets the budget ({result['why']})")
    cache = summary["cache"]
    if len(summary["devices"]) > 1:
        _print_table(FLEET_COLUMNS, [fleet_row(name, r) for name, r in
                                     summary["devices"].items()],
                     f"edgekit optimize {summary['model']} on {len(summary['devices'])} "
                     f"devices, {summary['seconds']:.1f} s")
    click.echo(f"cache: {cache['hits']} reused, {cache['measured']} measured; "
               f"{summary['seconds']:.0f} s; report: {summary.get('report')}")


FLEET_COLUMNS = ("device", "where", "status", "winner", "measured", "s", "why")


def fleet_row(name: str, result: DeviceResult) -> list[str]:
    """One device's line of the merged summary (the columns of `edgekit validate`'s fleet
    table: device, physical device, status, winner, candidates, seconds, note)."""
    status = "LOST" if result.get("lost") else ("WINNER" if result.get("winner") else "NONE")
    winner = result.get("winner") or {}
    measured = [c for c in result["candidates"] if c.get("values")]
    note = result.get("lost") or result.get("why") or ""
    return [name, str(result.get("where") or ""), status, str(winner.get("name") or "-"), str(len(measured)),
            f"{result.get('seconds') or 0:.1f}", note]
