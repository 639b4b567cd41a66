"""The Target (exporter) abstraction: export(source, spec, precision, out_dir) -> Artifact.

Every target checks its own output before it is recorded (ONNX: checker + parity against torch;
OpenVINO: compiled and run once; TensorRT: engine deserialised and run once)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from edgekit.errors import InputError

TARGETS: dict[str, type[Target]] = {}
# Target modules are imported on demand; their names are the registry's keys.
TARGET_MODULES = {"onnx": "edgekit.targets.onnx", "openvino": "edgekit.targets.openvino",
                  "tensorrt": "edgekit.targets.tensorrt"}


@dataclass
class Artifact:
    """One exported file and what is known about it (written into the stage's manifest)."""

    path: Path
    format: str
    precision: str
    metrics: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)

    def manifest_entry(self, out_dir: Path) -> dict[str, Any]:
        return {"path": str(self.path.relative_to(out_dir)), "format": self.format,
                "precision": self.precision, **self.config}


class Target:
    """Base class; subclasses set `name` and `precisions` and implement `export`."""

    name: ClassVar[str]
    precisions: ClassVar[tuple[str, ...]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if getattr(cls, "name", None):
            TARGETS[cls.name] = cls

    def check_precision(self, precision: str) -> None:
        if precision not in self.precisions:
            raise InputError(f"target {self.name} has no precision {precision!r}",
                             hint=f"choose one of: {', '.join(self.precisions)}")

    def export(self, source: Any, out_dir: Path, *, precision: str, **options: Any) -> Artifact:
        raise NotImplementedError


def get_target(name: str) -> Target:
    if name not in TARGET_MODULES:
        raise InputError(f"unknown target {name!r}", hint=f"choose one of: {', '.join(TARGET_MODULES)}")
    importlib.import_module(TARGET_MODULES[name])
    return TARGETS[name]()
