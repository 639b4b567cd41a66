"""`edgekit demo` (what `make demo` runs): the two shipped Fashion-MNIST recipes end to end —
LeNet-5, and the CNN+GRU hybrid pruned, made depthwise-separable and quantized to int8 on ONNX
Runtime and OpenVINO — then one HTML report of both. Trained models are cached and reused."""

from __future__ import annotations

from pathlib import Path

import click

from edgekit.cli.common import data_dir_option, json_option, print_json

DEMO_RECIPES = ("lenet5-fashion-mnist.yaml", "cnn-gru-fashion-mnist.yaml")


def recipe_dir() -> Path:
    """recipes/ in the working directory, else the ones shipped with edgekit."""
    from edgekit.resources import shipped_dir

    here = Path("recipes")
    return here if here.is_dir() else shipped_dir("recipes")


@click.command()
@click.option("-o", "--output", type=click.Path(file_okay=False), default="out",
              show_default=True, help="Folder for the recipes' outputs and the report.")
@data_dir_option
@json_option
def demo(output: str, data_dir: str | None, as_json: bool) -> None:
    """Run the demo recipes and print where the HTML report is."""
    from edgekit.cli.run import print_run
    from edgekit.recipe_run import run_recipe
    from edgekit.results.report import write_report
    from edgekit.results.store import open_store

    out = Path(output)
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
    if as_json:
        print_json({"recipes": results, "report": str(html), "markdown": str(md)})
        return
    verdicts = [f"{r['recipe']}: {'PASS' if r['passed'] else 'FAIL'}" for r in results]
    click.echo("; ".join(verdicts))
    click.echo(f"HTML report: {html.resolve()}")
