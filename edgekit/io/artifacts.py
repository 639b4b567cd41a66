"""Finding runnable artifacts and their InputSpec, in a file or an output folder. Torch-free."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from edgekit import kinds
from edgekit.errors import InputError
from edgekit.io.manifest import MANIFEST_NAME, Manifest
from edgekit.io.specfiles import spec_from_engine_metadata, spec_from_ir
from edgekit.kinds import RUNNABLE_SUFFIXES, TORCH_SUFFIXES
from edgekit.spec import InputSpec


def _spec_from_onnx(path: Path) -> InputSpec | None:
    from edgekit.io.onnxfile import spec_from_onnx

    return spec_from_onnx(path)


# Where each kind keeps its InputSpec (edgekit/kinds.py `spec_in`); "manifest" has no file of
# its own and falls through to the manifest entry and the sidecar below.
SPEC_READERS: dict[str, Callable[[Path], InputSpec | None]] = {
    "onnx-metadata": _spec_from_onnx,
    "ir-rt-info": spec_from_ir,
    "engine-metadata": spec_from_engine_metadata,
}


def spec_for(path: str | Path) -> InputSpec:
    """The InputSpec of an artifact: ONNX metadata / IR rt_info / engine metadata file, else its
    manifest entry, else a sidecar."""
    path = Path(path)
    kind = kinds.by_suffix(path)
    reader = SPEC_READERS.get(kind.spec_in) if kind else None
    if reader and (kind.format == "onnx" or path.is_file()):
        spec = reader(path)
        if spec:
            return spec
    recorded_spec = recorded(path, "input_spec")
    if recorded_spec:
        return InputSpec.model_validate(recorded_spec)
    sidecar = path.with_suffix(path.suffix + ".spec.json")
    if sidecar.exists():
        return InputSpec.from_json(sidecar.read_text())
    if kind is not None and kind.format == "onnx" and path.is_file():
        from edgekit.io.onnxfile import load_onnx, no_spec_error

        raise no_spec_error(load_onnx(path, load_external=False), path, flags=False)
    raise InputError(f"{path} does not say what input it takes",
                     hint="export it with edgekit, which records its input in the file (an "
                     "ONNX model from elsewhere: edgekit compress MODEL.onnx --int8 "
                     "--input-shape N,C,H,W -o OUT/ records it)")


def check_preprocessing(target: str | Path, given: Mapping[str, Any] | None) -> None:
    """The rule for --mean/--std/--resize/--crop/--channel-order on bench and validate: an
    artifact is evaluated the way it records (its preprocessing is part of the model, set when it
    was exported), so a flag may repeat what every artifact of `target` records but not differ
    from it: InputError naming the artifact, the flag and the recorded value."""
    from edgekit.io.models import announce
    from edgekit.preprocessing import describe_provenance

    given = {k: v for k, v in (given or {}).items() if v is not None}
    from edgekit.errors import EdgekitError

    try:
        entries = list_artifacts(target)
    except EdgekitError:
        if given:
            raise
        return  # the command's own checks say what is wrong with the target
    for entry in entries:
        try:
            spec = spec_for(entry["path"])
        except EdgekitError:
            if given:
                raise
            continue  # the command's own checks name what is wrong with this artifact
        # every command says where the preprocessing comes from: here, the artifact's file
        announce(describe_provenance(spec, {}).replace(
            "(all from the file)", f"(all from the file: {Path(entry['path']).name} records it)"))
        if not given:
            continue
        conflicts = spec.preprocessing_conflicts(**given)
        if conflicts:
            raise InputError(
                f"{Path(entry['path']).name} records its own preprocessing, and "
                + "; ".join(conflicts),
                hint="an artifact is evaluated with the preprocessing it was exported with: "
                "leave the flag out, or export the model again with it (edgekit export / "
                "compress MODEL.pt --mean ... --std ... --resize ... --crop ...)")


def list_artifacts(target: str | Path) -> list[dict[str, Any]]:
    """Artifacts to benchmark: a single file, or every runnable output of a folder's manifest
    (or, without one, every runnable file in it). Each: {path, format, precision, ...}."""
    target = Path(target)
    if not target.exists():
        raise InputError(f"{target} does not exist", hint="pass an artifact file or an output folder")
    if target.is_file():
        if target.suffix in TORCH_SUFFIXES:
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
    return kinds.by_suffix(path).format


def onnx_source_for(path: str | Path) -> Path | None:
    """The ONNX model an artifact is, or was made from (an IR or engine converted from it, as
    its manifest stage records): what its runtime's node names join back to. None if unknown."""
    path = Path(path)
    if path.suffix == ".onnx":
        return path
    folder = path.parent
    if (folder / MANIFEST_NAME).exists():
        for stage in Manifest(folder).stages:
            if not any(o.get("path") == path.name for o in stage.get("outputs") or []):
                continue
            source = ((stage.get("inputs") or {}).get("source") or {}).get("path")
            if source and source.endswith(".onnx"):
                for candidate in (Path(source), folder / Path(source).name):
                    if candidate.is_file():
                        return candidate
    fallback = folder / "model.onnx"
    return fallback if fallback.is_file() else None
