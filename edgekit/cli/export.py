"""`edgekit export` (edgekit.api.export)."""

from __future__ import annotations

import click

from edgekit.cli.common import data_dir_option, json_option, model_options, print_json


@click.command()
@click.argument("source", type=click.Path())
@click.option("--target", "target", default="onnx", show_default=True,
              help="onnx | openvino | tensorrt")
@click.option("--precision", default="fp32", show_default=True, help="fp32 | fp16 | int8")
@click.option("-o", "--output", type=click.Path(file_okay=False), default=None,
              help="Output folder (default: SOURCE when it is an output folder).")
@click.option("--parity-data", default=None,
              help="Data source for the parity check (default: fashion-mnist:test if installed).")
@click.option("--calib", default=None,
              help="Calibration set or data source for int8 (default: the one the folder's "
              "compress recorded).")
@click.option("--min-agreement", type=click.FloatRange(0, 1), default=None,
              help="Parity: top-1 agreement with the reference at least this, counted on the "
              "samples whose reference is not a near-tie (default 0.99 fp32/fp16, 0.90 int8).")
@click.option("--workspace-mb", type=int, default=None, help="TensorRT builder workspace limit.")
@click.option("--dla", type=int, default=None, help="TensorRT: DLA core to build for (Jetson).")
@click.option("--opset", type=int, default=None,
              help="ONNX: the opset to export (default 18); lower it for a device whose "
              "onnxruntime is older (the remote device check names its highest).")
@model_options
@data_dir_option
@json_option
def export(source: str, target: str, precision: str, output: str | None, parity_data: str | None,
           calib: str | None, min_agreement: float | None, workspace_mb: int | None, dla: int | None, opset: int | None,
           arch: str | None,
           arch_kwargs: str | None, input_shape, trust_model: bool, data_dir: str | None,
           as_json: bool) -> None:
    """Export SOURCE (a model file or an output folder) to a deployment format."""
    from edgekit.api import export as api_export

    result = api_export(source, output, target=target, precision=precision,
                        data={"eval": parity_data, "calib": calib, "data_dir": data_dir},
                        model_input={"input_shape": input_shape, "arch": arch,
                                     "arch_kwargs": arch_kwargs, "trust_model": trust_model},
                        options={"workspace_mb": workspace_mb, "dla": dla, "opset": opset,
                                 "min_agreement": min_agreement})
    artifact, record = result.artifact, result.record
    if as_json:
        print_json(record)
        return
    from edgekit.targets.onnx import FP32_FLOOR_FACTOR

    parity = artifact.metrics.get("parity", {})
    line = f"wrote {artifact.path} ({artifact.format}, {artifact.precision})"
    if parity:
        line += (f"; parity vs {'torch' if target == 'onnx' else 'fp32 ONNX'} on "
                 f"{parity.get('samples')} {parity.get('inputs', 'inputs')}: max abs diff "
                 f"{parity['max_abs_diff']:.2e}, top-1 agreement {parity['top1_agreement']:.3f}"
                 + (f" ({parity['decisive_agreement']:.3f} on the {parity['decisive_samples']} "
                    f"samples that are not near-ties)" if parity.get("near_ties") else "")
                 + (f", within {FP32_FLOOR_FACTOR:g}x PyTorch fp32's own rounding error "
                    f"{parity['fp32_floor']:.3g} "
                    "(its distance from float64) where the tolerance "
                    f"{parity['tolerance']:.3g} was not" if "fp32_floor" in parity else ""))
    click.echo(line)
    from pathlib import Path
    from shlex import quote

    click.echo(f"next: edgekit validate {quote(str(Path(artifact.path).parent))} --eval "
               f"{quote(parity_data) if parity_data else 'EVAL_DATA'}")
