"""Where an artifact's InputSpec is written, read without its runtime (the `spec_in` column of
edgekit/kinds.py): ONNX metadata (edgekit/io/onnxfile.py), an OpenVINO IR's rt_info, a TensorRT
engine's metadata file beside it. Standard library only, so `edgekit bench` finds the spec on a
device that has numpy and one runtime."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from edgekit.errors import ModelLoadError
from edgekit.spec import ONNX_METADATA_KEY, InputSpec


def read_ir_rt_info(xml_path: str | Path) -> dict[str, str]:
    """The IR's `rt_info/edgekit/*` values (input_spec, precision) without OpenVINO. An IR that
    OpenVINO converted from an edgekit ONNX model on its own carries the ONNX metadata under
    `rt_info/framework`; its InputSpec is taken from there."""
    try:
        root = ET.parse(str(xml_path)).getroot()
    except (ET.ParseError, OSError) as exc:
        raise ModelLoadError(f"{xml_path} is not a readable OpenVINO IR ({exc})",
                             hint="the file may be truncated: export it again") from None
    info: dict[str, str] = {}
    for item in root.findall("rt_info/framework/*"):
        if item.tag == ONNX_METADATA_KEY and "value" in item.attrib:
            info["input_spec"] = item.attrib["value"]
    for section in root.findall("rt_info/edgekit"):
        for item in section:
            if "value" in item.attrib:
                info[item.tag] = item.attrib["value"]
    return info


def spec_from_ir(xml_path: str | Path) -> InputSpec | None:
    text = read_ir_rt_info(xml_path).get("input_spec")
    return InputSpec.from_json(text) if text else None


def metadata_path(engine: str | Path) -> Path:
    """A TensorRT engine's metadata file: model.plan -> model.plan.json."""
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


def spec_from_engine_metadata(engine: str | Path) -> InputSpec | None:
    path = metadata_path(engine)
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, OSError):
        return None
    spec = meta.get("input_spec") if isinstance(meta, dict) else None
    return InputSpec.model_validate(spec) if spec else None
