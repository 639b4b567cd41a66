"""`edgekit calib build`."""

from __future__ import annotations

import click

from edgekit.cli.common import data_dir_option, json_option, print_json


@click.group()
def calib() -> None:
    """Build calibration sets."""


@calib.command("build")
@click.argument("source")
@click.option("-n", "--count", default=512, show_default=True, type=click.IntRange(min=1),
              help="Number of images.")
@click.option("--stratified/--random", default=True, show_default=True,
              help="Balance the classes (when the source has labels).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Output .npz (a .json manifest is written beside it).")
@data_dir_option
@json_option
def build(source: str, count: int, stratified: bool, seed: int, output: str,
          data_dir: str | None, as_json: bool) -> None:
    """Sample COUNT images of SOURCE into a calibration set."""
    from pathlib import Path

    from edgekit.data.calibration import build_calibration_set
    from edgekit.data.paths import source_paths
    from edgekit.io.outputs import check_outputs

    check_outputs({"-o": [output, Path(output).with_suffix(".json")]},
                  {"SOURCE": source_paths(source, data_dir)})

    manifest = build_calibration_set(source, output, count=count, stratified=stratified, seed=seed,
                                     data_dir=data_dir)
    if as_json:
        print_json(manifest)
    else:
        click.echo(f"wrote {output}: {manifest['count']} images from {source}, "
                   f"per class {manifest['per_class']}, sha256 {manifest['sha256'][:12]}…")
