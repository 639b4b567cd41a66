"""`edgekit demo` (what `make demo` runs): `edgekit optimize` on the shipped Fashion-MNIST
recipes — LeNet-5 and the CNN+GRU hybrid over each recipe's small `optimize:` space (pruning,
depthwise-separable, ONNX Runtime and OpenVINO, fp32 and int8), then a wide LeNet-5
(lenet5_wide) over the default space in a 5-minute budget — every candidate timed on this CPU.
For the two seed models the honest answer may be the original fp32 model on its fastest runtime;
the wide one is compute-bound at batch 1, where the search wins by several times. With
--pipeline it also runs the recipes' fixed compress pipelines and one HTML report of both.
Trained models, exports and measurements are cached and reused."""

from __future__ import annotations

from pathlib import Path

import click

from edgekit.cli.common import data_dir_option, json_option, print_json

DEMO_RECIPES = ("lenet5-fashion-mnist.yaml", "cnn-gru-fashion-mnist.yaml",
                "lenet5-wide-fashion-mnist.yaml")


def _interval(winner: dict) -> str:
    """', 99% CI 1.6–1.9 timed together with it' when the winner was confirmed in alternating
    rounds with the original (see edgekit/optimize/search.py)."""
    confirmed = winner.get("confirmed")
    if not confirmed:
        return ""
    return (f"; timed together with it: {confirmed['speedup']:.2f}×, "
            f"{100 * confirmed['confidence']:g}% CI {confirmed['ci_low']:.2f}–"
            f"{confirmed['ci_high']:.2f}")


# What the demo writes at the top of -o: a folder holding anything else is not the demo's.
DEMO_ENTRIES = ("optimize", "results.db", "results.jsonl", "report.html", "report.md",
                *(Path(name).stem for name in DEMO_RECIPES))


def check_demo_folder(out: Path) -> None:
    """Refuse an -o the demo does not own (a file, or a folder holding other entries) before
    anything is written: the demo's searches write into subfolders of -o, which each search
    alone would take for new folders."""
    from edgekit.errors import InputError
    from edgekit.io.debris import is_debris_name

    if not out.exists():
        return
    if not out.is_dir():
        raise InputError(f"output {out} exists and is not a folder", hint="-o names a folder")
    from edgekit.io.manifest import MANIFEST_NAME
    from edgekit.io.outputs import check_output_folder

    if (out / MANIFEST_NAME).exists():  # an edgekit output folder (`compress -o out/`) is ours
        check_output_folder(out)
        return
    foreign = sorted(p.name for p in out.iterdir()
                     if p.name not in DEMO_ENTRIES and not is_debris_name(p.name))
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3
                                          else "")
        raise InputError(f"output folder {out} holds files the demo did not write ({shown})",
                         hint="choose a new or empty folder for -o (default: out)")


def recipe_dir() -> Path:
    """recipes/ in the working directory, else the ones shipped with edgekit."""
    from edgekit.resources import shipped_dir

    here = Path("recipes")
    return here if here.is_dir() else shipped_dir("recipes")


@click.command()
@click.option("-o", "--output", type=click.Path(file_okay=False), default="out",
              show_default=True, help="Folder for the recipes' outputs and the report.")
@click.option("--pipeline", is_flag=True,
              help="Also run the recipes' fixed pipelines (compress, export, validate).")
@data_dir_option
@json_option
def demo(output: str, data_dir: str | None, as_json: bool, pipeline: bool) -> None:
    """Search each demo model's fastest artifact on this CPU; print the tables and reports."""
    from edgekit.cli.optimize import optimize_recipe, print_summary
    from edgekit.runtimes.interference import disturbed_suffix

    out = Path(output)
    check_demo_folder(out)
    searches = {}
    for name in DEMO_RECIPES:
        recipe = recipe_dir() / name
        click.echo(f"== edgekit optimize --recipe {recipe} -o {out / 'optimize' / recipe.stem}",
                   err=True)
        summary = optimize_recipe(recipe, out / "optimize" / recipe.stem, data_dir=data_dir)
        searches[recipe.stem] = summary
        if not as_json:
            print_summary(summary)
    pipelines = _pipelines(out, data_dir, as_json) if pipeline else None
    if as_json:
        print_json({"optimize": searches, **({"pipelines": pipelines} if pipelines else {})})
        return
    for stem, summary in searches.items():
        for device, result in summary["devices"].items():
            won = result.get("winner")
            click.echo(f"{stem} on {device}: " + (
                f"{won['name']} wins, {won['p50_ms']:.3f} ms ({won['speedup']:.2f}× the fp32 "
                f"original's fastest runtime{_interval(won)}"
                + disturbed_suffix(won.get("speedup_disturbed"))
                + f"), top-1 {won['top1']:.2f}%" if won
                else f"nothing meets the budget ({result['why']})"))
        click.echo(f"  report: {summary.get('report')}")


def _pipelines(out: Path, data_dir: str | None, as_json: bool) -> dict:
    """The recipes' fixed pipelines and one report of both (the demo before `optimize`)."""
    from edgekit.cli.run import print_run
    from edgekit.recipe_run import run_recipe
    from edgekit.results.report import write_report
    from edgekit.results.store import open_store

    store = out / "results.db"
    results = []
    for name in DEMO_RECIPES:
        recipe = recipe_dir() / name
        click.echo(f"== edgekit run {recipe}", err=True)
        result = run_recipe(recipe, out / recipe.stem, store=store, data_dir=data_dir)
        results.append(result)
        if not as_json:
            print_run(result)
    run_ids = [s["run_id"] for r in results for s in r["devices"].values() if s.get("run_id")]
    with open_store(store) as db:
        records = [rec for run_id in run_ids for rec in db.records(with_samples=True,
                                                                    run_id=run_id)]
    html, md = out / "report.html", out / "report.md"
    write_report(records, html, markdown_path=md, title="edgekit demo: Fashion-MNIST on this CPU",
                 source=str(store))
    if not as_json:
        verdicts = [f"{r['recipe']}: {'PASS' if r['passed'] else 'FAIL'}" for r in results]
        click.echo("; ".join(verdicts))
        click.echo(f"HTML report: {html.resolve()}")
    return {"recipes": results, "report": str(html), "markdown": str(md)}
