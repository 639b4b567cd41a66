"""The Target (exporter) abstraction: export(source, spec, precision, out_dir) -> Artifact.

Every target checks its own output before it is recorded (ONNX: checker + parity against torch;
OpenVINO: compiled and run once; TensorRT: engine deserialised and run once)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from edgekit.errors import InputError
from edgekit.registry import load_modules, suggest

# Filled by subclassing; get_target imports the package's modules (libraries load lazily).
TARGETS: dict[str, type[Target]] = {}


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
    source: ClassVar[str] = "onnx"  # the format it exports from (edgekit/kinds.py)

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
    if name not in TARGETS:
        load_modules("edgekit.targets")
    if name not in TARGETS:
        raise InputError(f"unknown target {name!r}", hint=suggest(name, list(TARGETS)))
    return TARGETS[name]()
