"""`edgekit compress`: the flags build a list of steps, the same list a recipe holds, and
edgekit.api.compress runs them."""

from __future__ import annotations

from typing import Any

import click

from edgekit.cli.common import (
    FINITE,
    Number,
    data_dir_option,
    json_option,
    model_options,
    print_json,
    train_options,
)


def steps_from_flags(opts: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Flags → [(step name, config)] in pipeline order; only flags the user set are passed."""
    steps: list[tuple[str, dict[str, Any]]] = []
    if opts["prune"] is not None or opts["target_macs"] is not None:
        cfg = {"ratio": opts["prune"], "target_macs": opts["target_macs"],
               "importance": opts["importance"], "global_pruning": opts["global_pruning"],
               "round_to": opts["round_to"], "ignore": list(opts["prune_ignore"]) or None,
               "head_ratio": opts.get("prune_heads")}
        steps.append(("prune", {k: v for k, v in cfg.items() if v is not None}))
    if opts["dwsep"]:
        cfg = {"rank": opts["dwsep_rank"], "max_error": opts["dwsep_max_error"],
               "include": list(opts["dwsep_include"]) or None,
               "exclude": list(opts["dwsep_exclude"]) or None}
        steps.append(("dwsep", {k: v for k, v in cfg.items() if v is not None}))
    if steps or opts["distill_epochs"] is not None:
        if opts["distill_epochs"] is None or opts["distill_epochs"] > 0:
            cfg = {"epochs": opts["distill_epochs"]}
            steps.append(("distill", {k: v for k, v in cfg.items() if v is not None}))
    if opts["int8"] or opts["flavour"] is not None:
        cfg = {"calib_size": opts["calib_size"], "method": opts["calib_method"],
               "max_drop": opts["max_drop"], "max_drop_rel": opts["max_drop_rel"],
               "flavour": opts["flavour"], "exclude": list(opts["keep_float"]) or None,
               "latency_fallback": opts["latency_fallback"],
               "latency_device": opts["latency_device"], "attention": opts.get("attention"),
               "min_agreement": opts.get("min_agreement")}
        steps.append(("quantize", {k: v for k, v in cfg.items() if v is not None}))
    return steps


def _rank(_ctx: click.Context, _param: click.Parameter, value: str | None) -> int | str | None:
    if value is None or value in ("auto", "full"):
        return value
    if value.isdigit() and int(value) >= 1:
        return int(value)
    raise click.BadParameter(f"{value!r} is not a positive integer, 'auto' or 'full'")


@click.command()
@click.argument("model", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--prune", type=Number(), default=None, help="Channel ratio to remove, in (0, 1).")
@click.option("--target-macs", type=Number(), default=None,
              help="Prune until MACs are this fraction of the original, in (0, 1).")
@click.option("--importance", default=None, help="l1 | l2 | taylor | bn-scale (pruning).")
@click.option("--global/--local", "global_pruning", default=None, help="Global or per-layer pruning.")
@click.option("--round-to", type=int, default=None, help="Round channel counts to a multiple of this.")
@click.option("--prune-ignore", multiple=True,
              help="Never prune this layer's outputs (module name or glob; repeatable).")
@click.option("--prune-heads", type=Number(), default=None,
              help="Fraction of attention heads to remove per layer, rounded to whole heads "
              "(default: the --prune ratio).")
@click.option("--dwsep", is_flag=True, help="Substitute depthwise-separable convolutions.")
@click.option("--dwsep-rank", default=None, metavar="R|auto|full", callback=_rank,
              help="Channel multiplier r of the depthwise conv (1, the MobileNet form, by "
              "default); auto: per layer the smallest r within --dwsep-max-error.")
@click.option("--dwsep-max-error", type=Number(), default=None,
              help="Rank auto: largest relative output error of a layer's init (default 0.10).")
@click.option("--dwsep-include", multiple=True, help="Only convs whose name matches (glob).")
@click.option("--dwsep-exclude", multiple=True, help="Skip convs whose name matches (glob).")
@click.option("--distill-epochs", type=int, default=None,
              help="Epochs of distillation from the original model (0 to skip).")
@click.option("--train", "train_source", default=None, help="Training data, e.g. fashion-mnist:train.")
@click.option("--eval", "eval_source", default=None,
              help="Labelled eval data, e.g. fashion-mnist:test: top-1 of every step, and the "
              "accuracy budget (--max-drop) is held on it.")
@click.option("--eval-limit", type=click.IntRange(min=1), default=None, help="Use a stratified sample of the eval set.")
@click.option("--int8", is_flag=True, help="int8 post-training quantization (QDQ ONNX).")
@click.option("--calib", "calib_source", default=None,
              help="Calibration set (.npz) or data source (default: a sample of --train).")
@click.option("--calib-size", type=click.IntRange(min=1), default=None, help="Number of calibration samples.")
@click.option("--calib-method", default=None,
              type=click.Choice(["minmax", "percentile", "entropy", "mse"]),
              help="Activation ranges: percentile (99.99, default) | minmax | entropy | mse.")
@click.option("--max-drop", type=FINITE, default=None,
              help="Allowed top-1 drop of the final artifact against the original model, in "
              "points, measured on --eval: it bounds the whole chain (int8 gets what "
              "prune/dwsep/distill left). Default 1.0 when --eval is given; 100 for no limit.")
@click.option("--max-drop-rel", type=FINITE, default=None,
              help="Allowed relative top-1 drop against the original, e.g. 0.01 keeps 99%.")
@click.option("--for", "flavour", default=None,
              type=click.Choice(["onnxruntime", "tensorrt", "openvino"]),
              help="int8 for: onnxruntime (QDQ, default) | tensorrt (QDQ for explicit "
              "quantization) | openvino (IR via NNCF).")
@click.option("--latency-fallback", "latency_fallback", is_flag=True, default=None,
              help="Also keep float the layers whose int8 form runs slower than float on "
              "--latency-device (per-layer profiles of both models).")
@click.option("--latency-device", default=None,
              help="Local device profile the latency fallback measures on (default local-cpu).")
@click.option("--attention", type=click.Choice(["auto", "float", "int8"]), default=None,
              help="int8 of attention models: auto (projections/MLP int8, the attention "
              "MatMuls by sensitivity), float (attention MatMuls float), int8 (no special case).")
@click.option("--min-agreement", type=click.FloatRange(0, 1), default=None,
              help="int8 parity on the eval data (the rule `edgekit export` applies): top-1 "
              "agreement with fp32 at least this, near-ties not counted (default 0.90).")
@click.option("--keep-float", multiple=True,
              help="Keep this ONNX node in float when quantizing (repeatable).")
@click.option("--overwrite", is_flag=True,
              help="Replace what another model or other settings left in -o (its old stages are "
              "forgotten first); without it such a folder is refused.")
@train_options
@model_options
@data_dir_option
@json_option
def compress(model: str, output: str, train_source: str | None, eval_source: str | None,
             eval_limit: int | None, calib_source: str | None, data_dir: str | None,
             arch: str | None, arch_kwargs: str | None, input_shape, trust_model: bool,
             overwrite: bool, as_json: bool, train_settings: Any, **flags: Any) -> None:
    """Compress MODEL: prune, depthwise-separable, distill, int8 — in that order. MODEL is a
    PyTorch model, or an fp32 ONNX model for --int8 alone."""
    from pathlib import Path

    from edgekit.api import compress as api_compress

    # The groups as mappings: the API checks them as it checks a Python caller's.
    data = {"train": train_source, "eval": eval_source, "calib": calib_source,
            "eval_limit": eval_limit, "data_dir": data_dir}
    result = api_compress(model, output, steps=steps_from_flags(flags), data=data,
                          budget={"max_drop": flags["max_drop"],
                                  "max_drop_rel": flags["max_drop_rel"]},
                          model_input={"input_shape": input_shape, "arch": arch,
                                       "arch_kwargs": arch_kwargs, "trust_model": trust_model},
                          overwrite=overwrite, training=train_settings)
    if as_json:
        print_json(result.to_json())
        return
    from edgekit.results.table import print_compress_rows

    print_compress_rows(result.rows, title=f"edgekit compress {Path(model).name}")
    click.echo(f"outputs in {Path(output)}/ (manifest.json lists them)")
    if eval_source:  # what a user runs next: every artifact on a device, with the gate
        from shlex import quote

        click.echo(f"next: edgekit validate {quote(output)} --eval {quote(eval_source)}")
