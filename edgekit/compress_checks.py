"""What compress checks before its first step writes: every data input exists, image data fits
the model, and no output lands on an input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekit.io.manifest import MANIFEST_NAME
from edgekit.io.outputs import check_outputs


def _data_sources(ctx: Any) -> dict[str, str | None]:
    return {"--train data": ctx.train_source, "--eval data": ctx.eval_source,
            "--calib set": ctx.calib_source}


def check_data_exists(ctx: Any) -> None:
    """Every data input exists, checked before the first step runs (a typo in --train is not
    found after minutes of pruning)."""
    from edgekit.data.paths import check_source_exists

    for what, source in _data_sources(ctx).items():
        check_source_exists(source, what, ctx.data_dir)


def check_image_data(ctx: Any, bundle: Any) -> None:
    """Image folders and CSV lists checked against the model before the first step writes."""
    import torch

    from edgekit.data.folders import preflight

    with torch.no_grad():
        outputs = bundle.model(torch.zeros(bundle.spec.batch_shape(1))).shape[-1]
    classes = preflight(_data_sources(ctx), bundle.spec, int(outputs))
    ctx.num_outputs = int(outputs)  # eval folders' classes → outputs (Dataset.for_outputs)
    if classes and not bundle.spec.class_names and len(classes) == int(outputs):
        # the folders name the model's classes: every artifact records them
        bundle.spec = bundle.spec.model_copy(update={"class_names": tuple(classes)})


def check_compress_outputs(out_dir: Path, passes: list[tuple[str, Any]],
                           model_file: Path | None, ctx: Any) -> None:
    """No file compress writes is one of its inputs (the model, --train/--eval/--calib data) or
    lands inside an input folder."""
    from edgekit.data.paths import source_paths

    data = _data_sources(ctx)
    planned = [MANIFEST_NAME, "model.onnx"] + [n for _, p in passes for n in p.outputs()]
    if any(p.kind == "torch" for _, p in passes):
        planned.append("model.pt")
    check_outputs({"the output": [out_dir / name for name in planned]},
                  {"the model": model_file,
                   **{what: source_paths(source, ctx.data_dir) for what, source in data.items()}})
