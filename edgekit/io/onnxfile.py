"""ONNX files: safe loading (external data must stay inside the model's folder), the InputSpec
stored in metadata_props, atomic saving. Needs `onnx` only (no torch)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from edgekit.errors import InputError, ModelLoadError
from edgekit.io.files import atomic_path
from edgekit.spec import ONNX_METADATA_KEY, InputSpec

if TYPE_CHECKING:  # pragma: no cover
    import onnx


def check_external_data(model: onnx.ModelProto, folder: Path) -> None:
    """Refuse external-data references that leave the model's folder (path traversal)."""
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    root = folder.resolve()
    for tensor in _get_all_tensors(model):
        if not uses_external_data(tensor):
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (root / location).resolve()
        if Path(location).is_absolute() or not target.is_relative_to(root):
            raise InputError(
                f"ONNX tensor {tensor.name!r} points at external data {location!r}, outside the "
                f"model's folder {root}",
                hint="keep external data files beside the .onnx file (relative paths, no '..')",
            )
        if not target.is_file():
            raise InputError(f"ONNX external data file {target} is missing",
                             hint="copy it next to the .onnx file")


def load_onnx(path: str | Path, *, load_external: bool = True) -> onnx.ModelProto:
    import onnx

    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        raise ModelLoadError(f"ONNX file {path} is missing or empty", hint="check the path")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types
        raise ModelLoadError(f"{path} is not a valid ONNX file ({exc})",
                             hint="the file may be truncated: export it again") from None
    check_external_data(model, path.parent)
    if load_external:
        from onnx.external_data_helper import load_external_data_for_model

        load_external_data_for_model(model, str(path.parent))
    return model


def spec_from_onnx(model_or_path: onnx.ModelProto | str | Path) -> InputSpec | None:
    model = load_onnx(model_or_path, load_external=False) if isinstance(
        model_or_path, str | Path) else model_or_path
    for prop in model.metadata_props:
        if prop.key == ONNX_METADATA_KEY:
            return InputSpec.from_json(prop.value)
    return None


def set_spec(model: onnx.ModelProto, spec: InputSpec) -> None:
    for prop in list(model.metadata_props):
        if prop.key == ONNX_METADATA_KEY:
            model.metadata_props.remove(prop)
    entry = model.metadata_props.add()
    entry.key, entry.value = ONNX_METADATA_KEY, spec.to_json()


def save_onnx(model: onnx.ModelProto, path: str | Path) -> Path:
    """Save atomically; models over 1.8 GB get their weights in one external file beside them."""
    import onnx

    path = Path(path)
    large = model.ByteSize() > 1_800_000_000
    with atomic_path(path) as tmp:
        if large:
            onnx.save_model(model, str(tmp), save_as_external_data=True,
                            location=path.name + ".data", all_tensors_to_one_file=True)
        else:
            onnx.save_model(model, str(tmp))
    return path
