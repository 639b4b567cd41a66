"""The search space of `edgekit optimize` (also a recipe's `optimize:` section).

Each candidate is one point of: pruning ratio (0 = none; channel counts rounded to the device
profile's `round_to`), depthwise-separable substitution (off, auto, or a channel multiplier),
the runtime and precision that runs it (only those the device profile lists: fp16 where the
device has it), and, for int8, which layers stay float. Distillation is not a dimension: a
pruned or substituted candidate is distilled on a schedule (short for many, full for the ones
that can still enter the front). Torch-free; typed like every config (extra="forbid").
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edgekit.errors import ConfigError
from edgekit.kinds import KINDS
from edgekit.optimize.schedule import DistillSchedule

# Named int8 float-fallback sets, resolved on each candidate's fp32 ONNX graph
# (edgekit.optimize.build.fallback_nodes). ONNX Runtime's int8 kernels for these layers are often
# slower than float on CPUs: a first conv with one input channel, depthwise convs. `latency`:
# the layers whose int8 form the device's own profiler times slower than float (quantize's
# latency_fallback; local devices only).
FALLBACK_SETS = ("none", "first-conv", "depthwise", "first-conv+depthwise", "latency")
# runtimes that read what an export target writes (edgekit/kinds.py): the ones optimize can try
RUNTIMES = tuple(dict.fromkeys(r for k in KINDS if k.target for r in k.runtimes))
DwsepChoice = Literal["off", "auto"] | Annotated[int, Field(ge=1)]
__all__ = ["DistillSchedule", "SearchSpace", "OptimizeSettings", "parse_duration"]


class SearchSpace(BaseModel):
    """What `edgekit optimize` may try. Defaults: three pruning ratios, dwsep off or auto, every
    runtime and precision the device profile lists, int8 with and without float fallbacks."""

    model_config = ConfigDict(extra="forbid")

    prune: list[float] = Field([0.0, 0.25, 0.5], min_length=1,
                               description="channel ratios to remove; 0 = no pruning")
    importance: Literal["l1", "l2", "taylor", "bn-scale"] = "l1"
    dwsep: list[DwsepChoice] = Field(["off", "auto"], min_length=1,
                                     description="off | auto | a channel multiplier r")
    dwsep_max_error: float = Field(0.10, gt=0, lt=1, description="rank auto's error bound")
    runtimes: list[Literal[RUNTIMES]] | None = Field(  # type: ignore[valid-type]
        None, description="runtimes to try (default: every one of the device profile)")
    precisions: list[Literal["fp32", "fp16", "int8"]] = Field(
        ["fp32", "fp16", "int8"], min_length=1,
        description="precisions to try where the device profile lists them")
    int8_fallback: list[str | list[str]] = Field(
        ["none", "first-conv", "depthwise"], min_length=1,
        description=f"layers kept float in int8: a named set ({', '.join(FALLBACK_SETS)}) "
                    "or a list of ONNX node names")
    calib_size: int | None = Field(256, ge=1, description="calibration samples for int8")
    batch: int | None = Field(None, ge=1, description="batch the latency is measured at "
                              "(default: the device profile's smallest)")
    distill: DistillSchedule = Field(default_factory=DistillSchedule)

    @field_validator("prune")
    @classmethod
    def _ratios(cls, value: list[float]) -> list[float]:
        bad = [r for r in value if not 0 <= r < 1]
        if bad:
            raise ValueError(f"pruning ratios must be in [0, 1), got {bad}")
        return sorted(set(value))

    @field_validator("int8_fallback")
    @classmethod
    def _fallbacks(cls, value: list[str | list[str]]) -> list[str | list[str]]:
        for item in value:
            if isinstance(item, str) and item not in FALLBACK_SETS:
                import difflib

                close = difflib.get_close_matches(item, FALLBACK_SETS, n=1)
                raise ValueError(f"unknown float-fallback set {item!r}"
                                 + (f"; did you mean {close[0]!r}?" if close else "")
                                 + f" (named sets: {', '.join(FALLBACK_SETS)}; or a list of "
                                 "ONNX node names)")
        return value

    def needs_training(self) -> bool:
        """Any candidate that changes the architecture is distilled, which needs --train."""
        return any(r > 0 for r in self.prune) or any(d != "off" for d in self.dwsep)

    def targets(self, device: Any) -> list[str]:
        """'runtime:precision' pairs the device profile lists and this space allows."""
        wanted = self.runtimes or [r for r in device.runtimes if r in RUNTIMES]
        out = []
        for runtime in wanted:
            if runtime not in device.runtimes:
                continue
            for precision in self.precisions:
                if precision in device.runtimes[runtime].precisions:
                    out.append(f"{runtime}:{precision}")
        return out

    def fallback_names(self) -> list[str]:
        """Each fallback set as one categorical value (lists joined with ',')."""
        return [item if isinstance(item, str) else ",".join(item) for item in self.int8_fallback]

    def size(self, targets: list[str]) -> int:
        """Distinct candidates over these 'runtime:precision' targets."""
        int8 = sum(t.endswith(":int8") for t in targets)
        per_arch = len(targets) - int8 + int8 * len(self.int8_fallback)
        return len(self.prune) * len(self.dwsep) * per_arch


class OptimizeSettings(SearchSpace):
    """A recipe's `optimize:` section: the space, and how long to search it."""

    trials: int = Field(24, ge=1, description="candidates per device (the originals included)")
    time_budget: str | None = Field(None, description="e.g. 30m, 1h, 90s; none: no limit")
    min_speedup: float = Field(1.0, gt=0, description="the winner runs at least this much "
                               "faster than the fp32 original on its fastest runtime")
    seed: int = 0

    @field_validator("time_budget")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_duration(value)
            except ConfigError as exc:
                raise ValueError(f"{exc.message} ({exc.hint})") from None
        return value

    def space(self) -> SearchSpace:
        return SearchSpace.model_validate(self.model_dump(include=set(SearchSpace.model_fields)))


_UNITS = {"s": 1, "m": 60, "h": 3600}


def parse_duration(text: str) -> float:
    """'30m' -> 1800.0 seconds; also '90s', '1h', '1h30m', and a bare number of seconds."""
    cleaned = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", cleaned):
        return float(cleaned)
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([smh])", cleaned)
    if not parts or "".join(f"{n}{u}" for n, u in parts) != cleaned.replace(" ", ""):
        raise ConfigError(f"time budget {text!r} is not a duration",
                          hint="write it as 90s, 30m, 1h or 1h30m")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def dwsep_label(choice: Any) -> str:
    return str(choice) if choice in ("off", "auto") else f"r{choice}"
