"""Finding runnable artifacts and their InputSpec, in a file or an output folder. Torch-free."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekit.errors import InputError
from edgekit.io.manifest import MANIFEST_NAME, Manifest
from edgekit.spec import InputSpec

RUNNABLE_SUFFIXES = (".onnx", ".xml", ".plan", ".engine")


def spec_for(path: str | Path) -> InputSpec:
    """The InputSpec of an artifact: ONNX metadata / IR rt_info / engine metadata file, else its
    manifest entry, else a sidecar."""
    path = Path(path)
    if path.suffix == ".onnx":
        from edgekit.io.onnxfile import spec_from_onnx

        spec = spec_from_onnx(path)
        if spec:
            return spec
    elif path.suffix == ".xml" and path.is_file():
        from edgekit.runtimes.openvino import spec_from_ir

        spec = spec_from_ir(path)
        if spec:
            return spec
    elif path.suffix in (".plan", ".engine") and path.is_file():
        from edgekit.runtimes.tensorrt import spec_from_engine_metadata

        spec = spec_from_engine_metadata(path)
        if spec:
            return spec
    recorded_spec = recorded(path, "input_spec")
    if recorded_spec:
        return InputSpec.model_validate(recorded_spec)
    sidecar = path.with_suffix(path.suffix + ".spec.json")
    if sidecar.exists():
        return InputSpec.from_json(sidecar.read_text())
    raise InputError(f"{path} does not say what input it takes",
                     hint="export it with edgekit, which records its input in the file (an "
                     "ONNX model from elsewhere: edgekit compress MODEL.onnx --int8 "
                     "--input-shape N,C,H,W -o OUT/ records it)")


def list_artifacts(target: str | Path) -> list[dict[str, Any]]:
    """Artifacts to benchmark: a single file, or every runnable output of a folder's manifest
    (or, without one, every runnable file in it). Each: {path, format, precision, ...}."""
    target = Path(target)
    if not target.exists():
        raise InputError(f"{target} does not exist", hint="pass an artifact file or an output folder")
    if target.is_file():
        if target.suffix in (".pt", ".pth", ".pt2"):
            raise InputError(f"{target.name} is a PyTorch model; edgekit bench runs exported "
                             "artifacts",
                             hint=f"export it first: edgekit export {target} --target onnx -o "
                                  "out/ (then edgekit bench out/)")
        if target.suffix not in RUNNABLE_SUFFIXES:
            raise InputError(f"{target.name} is not a runnable artifact",
                             hint=f"edgekit runs {', '.join(RUNNABLE_SUFFIXES)} files")
        entry = next(iter(manifest_entries(target)), None) or {"format": _format_of(target),
                                                                 "precision": "fp32"}
        return [{**entry, "path": target}]
    found = []
    if (target / MANIFEST_NAME).exists():
        for art in Manifest(target).artifacts():
            path = target / art["path"]
            if path.suffix in RUNNABLE_SUFFIXES and path.is_file():
                found.append({**art, "path": path})
    else:
        for path in sorted(target.iterdir()):
            if path.suffix in RUNNABLE_SUFFIXES:
                found.append({"path": path, "format": _format_of(path), "precision": "fp32"})
    if not found:
        raise InputError(f"{target} holds no runnable artifact",
                         hint="run `edgekit export MODEL -o FOLDER` first")
    return found


def find_reference(target: str | Path) -> Path | None:
    """The fp32 ONNX model that other artifacts of the same folder are compared with: the one
    marked `role: reference` (the uncompressed original, which `edgekit run` exports before
    compressing), else the last fp32 ONNX model."""
    target = Path(target)
    folder = target if target.is_dir() else target.parent
    if (folder / MANIFEST_NAME).exists():
        manifest = Manifest(folder)
        hit = manifest.find(format="onnx", precision="fp32", role="reference") or \
            manifest.find(format="onnx", precision="fp32")
        if hit:
            return folder / hit["path"]
    candidate = folder / "model.onnx"
    return candidate if candidate.exists() else None


def manifest_entries(path: Path) -> list[dict[str, Any]]:
    """What the manifest beside `path` records about that file, one entry per stage that wrote
    it, in stage order ([] without a manifest)."""
    if not (path.parent / MANIFEST_NAME).exists():
        return []
    return [dict(art) for art in Manifest(path.parent).artifacts() if art["path"] == path.name]


def recorded(path: Path, key: str) -> Any:
    """The first value the manifest records for `key` of this file (None when none does)."""
    return next((e[key] for e in manifest_entries(path) if e.get(key)), None)


def _format_of(path: Path) -> str:
    return {".onnx": "onnx", ".xml": "openvino", ".plan": "tensorrt", ".engine": "tensorrt"}[path.suffix]
