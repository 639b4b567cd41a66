"""`edgekit zoo`: list the reference models and train them on Fashion-MNIST."""

from __future__ import annotations

from pathlib import Path

import click

from edgekit.cli.common import Number, data_dir_option, json_option, print_json
from edgekit.errors import InputError
from edgekit.limits import MAX_THREADS


@click.group()
def zoo() -> None:
    """Reference models: list and train them on Fashion-MNIST."""


@zoo.command("list")
@json_option
def list_models(as_json: bool) -> None:
    """List the reference models, their default epochs and target top-1, and the test top-1 of
    the trained checkpoint shipped with edgekit (used by recipes and `edgekit demo`)."""
    from edgekit.zoo import ZOO, shipped_checkpoint, shipped_record

    rows = []
    for e in ZOO.values():
        path, record = shipped_checkpoint(e.name), shipped_record(e.name)
        shipped = {"path": str(path), "sha256": record["sha256"],
                   "test_top1": record["test_top1"]} if path and record else None
        rows.append({"name": e.name, "arch": e.factory, "epochs": e.epochs,
                     "target_top1": e.target_top1, "shipped": shipped,
                     "description": e.description})
    if as_json:
        print_json(rows)
        return
    width = max(len(r["name"]) for r in rows)
    click.echo(f"{'name':<{width}}  epochs  target  shipped  description")
    for r in rows:
        shipped = f"{r['shipped']['test_top1']:.4f}" if r["shipped"] else "no"
        click.echo(f"{r['name']:<{width}}  {r['epochs']:>6}  {r['target_top1']:>6.2f}  "
                   f"{shipped:>7}  {r['description']}")


@zoo.command("train")
@click.argument("name")
@click.option("-o", "--output", required=True, type=click.Path(),
              help="Checkpoint file to write (an edgekit checkpoint, e.g. model.pt).")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Epochs to train (default: the model's, see `edgekit zoo list`).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None)
@click.option("--lr", type=Number(0, low_open=True), default=None,
              help="Peak learning rate, reached after the warm-up.")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Train on a stratified subset of N training images (quick runs).")
@click.option("--eval-limit", type=click.IntRange(min=1), default=None,
              help="Measure top-1 on a stratified subset of N test images.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=click.IntRange(min=1, max=MAX_THREADS), default=None,
              help="torch CPU threads (default: torch's choice).")
@data_dir_option
@json_option
def train(name: str, output: str, epochs: int | None, batch_size: int | None, lr: float | None,
          limit: int | None, eval_limit: int | None, seed: int, threads: int | None,
          data_dir: str | None, as_json: bool) -> None:
    """Train reference model NAME on Fashion-MNIST with the article's recipe (random crop with
    padding, horizontal flip, cosine LR with warm-up) and report its test top-1."""
    from edgekit.zoo import get_entry

    entry = get_entry(name)
    out = Path(output)
    if out.is_dir() or output.endswith(("/", "\\")):
        raise InputError(f"-o {output} is a directory; it must name the checkpoint file",
                         hint=f"e.g. -o {out / (name + '.pt')}")
    import zipfile

    if out.exists() and not zipfile.is_zipfile(out):  # a user's file, not a torch checkpoint
        raise InputError(f"-o {output} exists and is not a checkpoint; edgekit replaces only "
                         "checkpoints", hint="choose a new file for -o")
    from edgekit.io.models import save_checkpoint
    from edgekit.zoo.train import TrainConfig, train_zoo_model

    overrides = {k: v for k, v in {"epochs": epochs, "batch_size": batch_size, "lr": lr,
                                   "limit": limit, "num_threads": threads}.items() if v is not None}
    from edgekit.config import parse_as

    # through the schema's checks as an error naming the flag (--lr nan was a traceback)
    cfg = parse_as(TrainConfig, {"epochs": entry.epochs, **entry.train, "seed": seed,
                                 **overrides}, "zoo train options")
    bundle, summary = train_zoo_model(name, cfg, data_dir=data_dir, eval_limit=eval_limit)
    save_checkpoint(bundle, out)
    summary["output"] = str(out)
    if as_json:
        print_json(summary)
        return
    history = summary["history"]
    per_epoch = history["seconds"] / max(1, len(history["epochs"]))
    verdict = "meets" if summary["meets_target"] else "MISSES"
    click.echo(f"{name}: test top-1 {summary['test_top1']:.4f} on {summary['test_images']} images "
               f"({verdict} target {summary['target_top1']:.2f}) after "
               f"{len(history['epochs'])} epochs, {per_epoch:.1f} s/epoch, "
               f"{summary['parameters']:,} parameters")
    click.echo(f"saved {out}")
