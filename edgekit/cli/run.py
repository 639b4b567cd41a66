"""`edgekit run RECIPE`: compress, export, validate on the recipe's devices, report — stage by
stage, resuming from the last finished stage when rerun."""

from __future__ import annotations

import click

from edgekit.cli.common import data_dir_option, json_option, print_json


def print_run(result: dict) -> None:
    """The stage log, the gate table per device, and where the report is."""
    from edgekit.results.store import open_store
    from edgekit.results.table import print_gate_records

    for stage in result["stages"]:
        click.echo(f"  {stage['stage']:<28} {stage['status']:<10} {stage['seconds']:>8.1f} s")
    with open_store(result["store"]) as store:
        for device, summary in result["devices"].items():
            if not summary.get("run_id"):
                click.echo(f"{device}: not validated ({summary.get('skipped', 'skipped')})")
                continue
            records = store.records(run_id=summary["run_id"])
            print_gate_records(records, title=f"{result['recipe']} on {device}")
            d = summary.get("decisive") or {}
            click.echo(f"{device}: {d.get('artifact')} decides ({d.get('why')}) -> "
                       + ("PASS" if d.get("passed") else "FAIL: " + "; ".join(d.get("reasons", []))))
    click.echo(f"report: {result['report']}")


@click.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(file_okay=False), default=None,
              help="Output folder (default: out/<recipe name>).")
@click.option("--store", "store_path", type=click.Path(dir_okay=False), default=None,
              help="Results store (default: OUT/results.db, or the recipe's report.store).")
@click.option("--fresh", is_flag=True,
              help="Run every stage again instead of resuming finished ones.")
@click.option("--trust-recipe", is_flag=True,
              help="Let the recipe name any module:factory as model.arch and set "
              "model.trust_model (both run code the recipe chose). Only for recipes you trust.")
@data_dir_option
@json_option
def run(recipe: str, output: str | None, store_path: str | None, fresh: bool,
        trust_recipe: bool, data_dir: str | None, as_json: bool) -> None:
    """Run RECIPE (a recipes/*.yaml file): compress, export, validate, report. Rerun after an
    interruption to resume from the last finished stage. Exit 1 when a device's deciding
    artifact fails the recipe's budget."""
    from edgekit.errors import GateError
    from edgekit.recipe_run import run_recipe

    result = run_recipe(recipe, output, store=store_path, data_dir=data_dir, fresh=fresh,
                        trust_recipe=trust_recipe)
    if as_json:
        print_json(result)
    else:
        print_run(result)
    if not result["passed"]:
        failed = [n for n, s in result["devices"].items()
                  if s.get("run_id") and not s.get("passed")]
        raise GateError(f"{result['recipe']}: the deciding artifact fails the budget on "
                        f"{', '.join(failed)}", hint=f"see {result['report']}")
