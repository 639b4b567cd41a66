"""`edgekit profile`: per-layer time of one artifact on a device, from the runtime's own
profiler (which layer? which precision actually ran?). Torch-free."""

from __future__ import annotations

import click

from edgekit.cli.common import json_option, print_json


@click.command()
@click.argument("artifact", type=click.Path())
@click.option("--device", "device_name", default="local-cpu", show_default=True,
              help="Device profile name or YAML path (a local one).")
@click.option("--runtime", default=None,
              help="Runtime to profile on (default: the one that reads the artifact).")
@click.option("--batch", type=int, default=1, show_default=True, help="Batch size.")
@click.option("--runs", type=int, default=50, show_default=True,
              help="Profiled runs (after 10 warm-up runs); each layer's time is its median.")
@click.option("--threads", type=int, default=None, help="Override the profile's thread count.")
@click.option("--onnx", "onnx_source", type=click.Path(exists=True, dir_okay=False), default=None,
              help="The ONNX model the artifact was made from, for the join to ONNX nodes and "
              "PyTorch modules (default: from the folder's manifest).")
@click.option("--store", "store_path", type=click.Path(dir_okay=False), default=None,
              help="Append the profile to this results store; `edgekit report` shows it.")
@click.option("--top", type=int, default=None, help="Show only the N slowest layers.")
@json_option
def profile(artifact: str, device_name: str, runtime: str | None, batch: int, runs: int,
            threads: int | None, onnx_source: str | None, store_path: str | None,
            top: int | None, as_json: bool) -> None:
    """Per-layer time of ARTIFACT on a device: layer, PyTorch module, the precision that ran,
    ms and share of the total, from ONNX Runtime's profiler, OpenVINO's performance counters
    or TensorRT's layer profiler."""
    from pathlib import Path

    from edgekit.devices import load_profile
    from edgekit.errors import InputError
    from edgekit.validate.layer_profile import profile_on_device

    device = load_profile(device_name)
    if threads:
        device = device.model_copy(update={"threads": threads})
    if batch < 1 or runs < 1:
        raise InputError("--batch and --runs must be at least 1")
    from edgekit.limits import MAX_BATCH

    if batch > MAX_BATCH:  # before an input of 10**11 samples is allocated
        raise InputError(f"--batch {batch} is over edgekit's limit of {MAX_BATCH}",
                         hint="profile at the batch the device will run")
    record = profile_on_device(Path(artifact), device, runtime=runtime, batch=batch, runs=runs,
                               onnx_source=Path(onnx_source) if onnx_source else None)
    if store_path:
        from edgekit.results.store import open_store

        with open_store(store_path) as store:
            record["id"] = store.add([record])[0]
    if as_json:
        print_json(record)
        return
    from edgekit.results.table import print_layer_profile

    print_layer_profile(record, top=top)
