"""The Target (exporter) abstraction: export(source, spec, precision, out_dir) -> Artifact.

Every target checks its own output before it is recorded (ONNX: checker + parity against torch;
OpenVINO: compiled and run once; TensorRT: engine deserialised and run once)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from edgekit.config import parse_as
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


class TargetOptions(BaseModel):
    """A target's options (recipe `exports[].options`, `edgekit export` flags). Each target
    extends it; unknown keys are errors with the closest valid key, checked when a recipe is
    loaded and again when `export` is called."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    filename: str | None = Field(None, description="file name inside the output folder")
    atol: float = Field(1e-4, ge=0, description="parity: absolute logit tolerance")
    rtol: float = Field(1e-3, ge=0, description="parity: relative logit tolerance")
    min_agreement: float | None = Field(
        None, ge=0, le=1, description="parity: top-1 agreement at least this, on the samples "
        "whose reference is not a near-tie (default: 0.99 fp32/fp16, 0.90 int8)")


class Target:
    """Base class; subclasses set `name`, `precisions` and `Options` and implement `export`
    (`export(source, out_dir, *, precision, parity_data, data_dir, **options)`, the options
    checked with `parse_options`)."""

    name: ClassVar[str]
    precisions: ClassVar[tuple[str, ...]]
    source: ClassVar[str] = "onnx"  # the format it exports from (edgekit/kinds.py)
    Options: ClassVar[type[TargetOptions]] = TargetOptions

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if getattr(cls, "name", None):
            TARGETS[cls.name] = cls

    def check_precision(self, precision: str) -> None:
        if precision not in self.precisions:
            raise InputError(f"target {self.name} has no precision {precision!r}",
                             hint=f"choose one of: {', '.join(self.precisions)}")

    @classmethod
    def parse_options(cls, options: dict[str, Any], where: str | None = None) -> Any:
        """The options as this target's typed config (ConfigError naming an unknown key)."""
        return parse_as(cls.Options, dict(options), where or f"export target {cls.name} options")

    def export(self, source: Any, out_dir: Path, *, precision: str, parity_data: Any = None,
               data_dir: str | None = None, **options: Any) -> Artifact:
        raise NotImplementedError


def get_target(name: str) -> Target:
    if name not in TARGETS:
        load_modules("edgekit.targets")
    if name not in TARGETS:
        raise InputError(f"unknown target {name!r}", hint=suggest(name, list(TARGETS)))
    return TARGETS[name]()
