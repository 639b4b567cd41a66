"""`edgekit bench`: latency and accuracy of artifacts on this machine. Torch-free."""

from __future__ import annotations

from pathlib import Path

import click

from edgekit.cli.common import (
    data_dir_option,
    json_option,
    print_json,
    recorded_preprocessing_options,
)


def parse_batches(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"{text!r}: give comma-separated integers, e.g. 1,8") from None
    from edgekit.limits import MAX_BATCH

    if any(v <= 0 for v in values):
        raise click.BadParameter("batch sizes must be positive")
    if any(v > MAX_BATCH for v in values):  # before an input of 10**11 samples is allocated
        raise click.BadParameter(f"batch sizes must be at most {MAX_BATCH}")
    return values


@click.command()
@click.argument("target", type=click.Path())
@click.option("--eval", "eval_source", default=None,
              help="Labelled data for top-1 (e.g. fashion-mnist:test).")
@click.option("--device", "device_name", default="local-cpu", show_default=True,
              help="Device profile name or YAML path.")
@click.option("--batch", "batch_text", default=None, help="Batch sizes, e.g. 1,8 (default: profile's).")
@click.option("--runtime", default=None, help="Force a runtime (onnxruntime, openvino, …).")
@click.option("--reference", type=click.Path(exists=True, dir_okay=False), default=None,
              help="fp32 ONNX model to compare against (default: the folder's model.onnx).")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Use a stratified sample of the eval set.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Override the profile's thread count.")
@recorded_preprocessing_options
@data_dir_option
@json_option
def bench(target: str, eval_source: str | None, device_name: str, batch_text: str | None,
          runtime: str | None, reference: str | None, limit: int | None, threads: int | None,
          data_dir: str | None, as_json: bool, preprocessing: dict) -> None:
    """Benchmark TARGET (an artifact or an output folder) with the latency protocol.

    --eval data is preprocessed as each artifact records (resize, crop, mean, std, channel
    order, set when it was exported); --mean/--std/--resize/--crop/--channel-order may repeat
    those values, and a different value is an error (export the model again to change them)."""
    from edgekit.devices import load_profile
    from edgekit.io.artifacts import check_preprocessing
    from edgekit.validate.bench import benchmark

    check_preprocessing(target, preprocessing)
    device = load_profile(device_name)
    if threads is not None:
        device = device.model_copy(update={"threads": threads})
    records = benchmark(target, device=device, eval_source=eval_source,
                        batches=parse_batches(batch_text), runtime=runtime, reference=reference,
                        data_dir=data_dir, limit=limit)
    if as_json:
        print_json([{k: v for k, v in r.items()} for r in records])
        return
    import sys

    from edgekit.results.table import print_records

    print_records([r for r in records if not r.get("skipped")],
                  title=f"edgekit bench on {device.name}")
    for r in records:
        if r.get("skipped"):
            print(f"skipped {Path(r['artifact']).name}: {r['skipped']}", file=sys.stderr)
