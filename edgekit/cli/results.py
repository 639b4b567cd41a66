"""`edgekit results` (query the results store) and `edgekit report` (HTML + Markdown)."""

from __future__ import annotations

import click

from edgekit.cli.common import json_option, print_json


@click.command()
@click.argument("store", type=click.Path(dir_okay=False))
@click.option("--model", default=None, help="Only this model.")
@click.option("--device", default=None, help="Only this device (profile name).")
@click.option("--runtime", default=None, help="Only this runtime (onnxruntime, openvino, …).")
@click.option("--precision", default=None, help="Only this precision (fp32, fp16, int8).")
@click.option("--run", "run_id", default=None, help="Only this validation run id.")
@click.option("--all", "show_all", is_flag=True,
              help="Every stored record, not only the newest per artifact/runtime/batch.")
@click.option("--samples", is_flag=True, help="With --json: include every latency sample.")
@json_option
def results(store: str, model: str | None, device: str | None, runtime: str | None,
            precision: str | None, run_id: str | None, show_all: bool, samples: bool,
            as_json: bool) -> None:
    """Query the results STORE (SQLite, written by validate --store and run)."""
    from edgekit.results.store import latest, open_store

    with open_store(store, create=False) as db:
        rows = db.records(with_samples=samples and as_json, model=model, device=device,
                          runtime=runtime, precision=precision, run_id=run_id)
    if not show_all:
        rows = latest(rows)
    if as_json:
        print_json(rows)
        return
    from edgekit.results.store import is_layer_profile
    from edgekit.results.table import print_gate_records, print_layer_profile

    for record in [r for r in rows if is_layer_profile(r)]:
        print_layer_profile(record, top=15)
    rows = [r for r in rows if not is_layer_profile(r)]

    filters = ", ".join(f"{k}={v}" for k, v in {"model": model, "device": device,
                                                 "runtime": runtime, "precision": precision,
                                                 "run": run_id}.items() if v)
    print_gate_records(rows, title=f"{store}: {len(rows)} results" + (f" ({filters})" if filters
                                                                      else ""))


@click.command()
@click.argument("store", type=click.Path(dir_okay=False))
@click.option("-o", "--output", default="report.html", show_default=True,
              type=click.Path(dir_okay=False), help="HTML file to write.")
@click.option("--markdown", "markdown_path", default=None, type=click.Path(dir_okay=False),
              help="Also write the Markdown table here.")
@click.option("--model", default=None, help="Only this model.")
@click.option("--device", default=None, help="Only this device.")
@click.option("--title", default="edgekit report", show_default=True)
@json_option
def report(store: str, output: str, markdown_path: str | None, model: str | None,
           device: str | None, title: str, as_json: bool) -> None:
    """Write one self-contained HTML report (plots, tables, environment) of the results STORE."""
    from pathlib import Path

    from edgekit.io.outputs import check_output_file, check_outputs
    from edgekit.results.report import write_report, written_by_edgekit
    from edgekit.results.store import open_store

    check_outputs({"-o": output, "--markdown": markdown_path},
                  {"the results store": [store, Path(store).with_suffix(".jsonl")]})
    # a file edgekit did not write (a checkpoint, the user's own page) is never replaced
    check_output_file(output, "-o", (".html", ".htm"), written_by_edgekit)
    if markdown_path:
        check_output_file(markdown_path, "--markdown", (".md", ".markdown"), written_by_edgekit)

    with open_store(store, create=False) as db:
        rows = db.records(with_samples=True, model=model, device=device)
    written = write_report(rows, output, markdown_path=markdown_path, title=title, source=store)
    if as_json:
        print_json(written)
        return
    click.echo(f"wrote {output} ({written['shown']} results from {written['records']} records)"
               + (f" and {markdown_path}" if markdown_path else ""))
