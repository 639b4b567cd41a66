"""Stages that chain through an output folder's manifest: export (and, with the recipe runner,
compress and validate). Each stage reads what it needs from the manifest and records what it made."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekit.errors import InputError
from edgekit.io.manifest import MANIFEST_NAME, Manifest
from edgekit.targets.base import Artifact, get_target

# What each target exports from: a torch model (checkpoint) or the fp32 ONNX model.
TARGET_SOURCE = {"onnx": "checkpoint", "openvino": "onnx", "tensorrt": "onnx"}
DEFAULT_PARITY_SOURCE = "fashion-mnist:test"


def resolve_source(source: Path, kind: str, model_options: dict[str, Any]) -> tuple[Any, Path]:
    """The export source (a ModelBundle or an ONNX path) from a model file or an output folder."""
    if source.is_dir() and (source / MANIFEST_NAME).exists():
        manifest = Manifest(source)
        match = manifest.find(format="checkpoint") if kind == "checkpoint" else \
            manifest.find(format="onnx", precision="fp32")
        if match is None:
            want = "an edgekit checkpoint" if kind == "checkpoint" else "an fp32 ONNX model"
            raise InputError(f"{source} holds no {want} to export from",
                             hint="export to ONNX first: edgekit export MODEL.pt --target onnx -o "
                             f"{source}")
        source = source / match["path"]
    elif source.is_dir():
        raise InputError(f"{source} is a directory without {MANIFEST_NAME}",
                         hint="pass a model file, or an output folder written by edgekit")
    if kind == "checkpoint":
        if source.suffix == ".onnx":
            raise InputError("the onnx target exports from a PyTorch model, not from an .onnx file",
                             hint="pass the .pt file (or the folder holding its checkpoint)")
        from edgekit.io.models import load_model

        return load_model(source, **model_options), source
    if source.suffix != ".onnx":
        raise InputError(f"this target exports from an ONNX model, got {source.name}",
                         hint="export to ONNX first, then pass the output folder or the .onnx file")
    return source, source


def parity_sample(spec, source: str | None, data_dir: str | None = None):
    """Real inputs for parity checks; None (random inputs, recorded as such) when unavailable."""
    from edgekit.data import load_dataset
    from edgekit.errors import DataError

    try:
        return load_dataset(source or DEFAULT_PARITY_SOURCE, spec, data_dir=data_dir, limit=256).x
    except DataError:
        if source:
            raise
        return None


def export_artifact(source: str | Path, target: str, out_dir: str | Path | None, *,
                    precision: str = "fp32", model_options: dict[str, Any] | None = None,
                    parity_source: str | None = None, data_dir: str | None = None,
                    **options: Any) -> tuple[Artifact, dict[str, Any]]:
    """Export `source` with `target` into `out_dir` and record the stage in its manifest."""
    source = Path(source)
    if out_dir is None:
        if not source.is_dir():
            raise InputError("no output folder given", hint="pass -o OUT/")
        out_dir = source
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"output {out_dir} exists and is not a folder", hint="-o names a folder")
    exporter = get_target(target)
    exporter.check_precision(precision)
    loaded, source_file = resolve_source(source, TARGET_SOURCE[target], model_options or {})
    if target == "onnx":
        spec = loaded.spec
        options.setdefault("parity_data", parity_sample(spec, parity_source, data_dir))
    else:
        from edgekit.io.artifacts import spec_for

        spec = spec_for(loaded)
    out_dir.mkdir(parents=True, exist_ok=True)
    artifact = exporter.export(loaded, out_dir, precision=precision, **options)
    model_name = loaded.name if hasattr(loaded, "name") and not isinstance(loaded, Path) else None
    entry = {**artifact.manifest_entry(out_dir), "input_spec": spec.model_dump(mode="json")}
    if model_name:
        entry["model"] = model_name
    record = Manifest(out_dir).add_stage(
        f"export-{target}-{precision}",
        inputs={"source": source_file},
        config={"target": target, "precision": precision, **{
            k: v for k, v in options.items() if isinstance(v, str | int | float | bool | None)}},
        outputs=[entry],
        metrics=artifact.metrics,
        versions=artifact.versions,
    )
    return artifact, record
