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

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edgekit.errors import ConfigError
from edgekit.optimize.records import Params
from edgekit.optimize.schedule import DistillSchedule

# Named int8 float-fallback sets, resolved on each candidate's fp32 ONNX graph
# (edgekit.optimize.build.fallback_nodes). ONNX Runtime's int8 kernels for these layers are often
# slower than float on CPUs: a first conv with one input channel, depthwise convs. `latency`:
# the layers whose int8 form the device's own profiler times slower than float (quantize's
# latency_fallback; local devices only).
FALLBACK_SETS = ("none", "first-conv", "depthwise", "first-conv+depthwise", "latency")


def runtimes() -> tuple[str, ...]:
    """The runtimes optimize can try: those that read what an export target writes (the table
    of kinds, edgekit/kinds.py, and every registered Runner)."""
    from edgekit.kinds import by_format
    from edgekit.kinds import runtimes as all_runtimes
    from edgekit.runtimes.base import RUNNERS, runner_names

    runner_names()
    return tuple(r for r in all_runtimes() if r in RUNNERS
                 and any((k := by_format(f)) is not None and k.target for f in RUNNERS[r].formats))


def knobs() -> list[Any]:
    """The passes' searchable fields (`Pass.search`, edgekit/passes/), in their usual order."""
    from edgekit.passes.base import search_knobs

    return [knob for _, knob in search_knobs()]


def _field_adapter(config: Any, field_name: str) -> Any:
    from pydantic import TypeAdapter

    info = config.model_fields[field_name]
    if not info.metadata:
        return TypeAdapter(info.annotation)
    return TypeAdapter(Annotated[(info.annotation, *info.metadata)])  # type: ignore[misc]


def _check_knobs(data: dict[str, Any], own: set[str]) -> dict[str, Any]:
    """A space's pass knobs (and their settings) checked against each pass's own Config, their
    defaults filled in; any other key is an error naming the closest valid one."""
    from pydantic import ValidationError

    from edgekit.passes.base import search_knobs
    from edgekit.registry import suggest

    declared = search_knobs()
    valid = {k.name for _, k in declared} | {s for _, k in declared for s in k.settings}
    for key in data:
        if key not in own and key not in valid:
            raise ConfigError(f"unknown key {key!r}", hint=suggest(str(key), sorted(own | valid)))
    out = dict(data)
    for pass_cls, knob in declared:
        values = out.get(knob.name, list(knob.default))
        if not isinstance(values, list | tuple) or not values:
            raise ConfigError(f"{knob.name}: give a non-empty list of choices ({knob.help})")
        adapter = _field_adapter(pass_cls.Config, knob.field)
        checked = []
        for value in values:
            if knob.is_off(value):
                checked.append(knob.off)
                continue
            try:
                checked.append(adapter.validate_python(value))
            except ValidationError as exc:
                raise ConfigError(f"{knob.name}: {value!r} is not a choice of the {pass_cls.name} "
                                  f"pass's {knob.field}: {exc.errors()[0]['msg']}",
                                  hint=knob.help) from None
        out[knob.name] = sorted(set(checked)) if knob.sort else checked
        for key, config_field in knob.settings.items():
            adapter = _field_adapter(pass_cls.Config, config_field)
            value = out.get(key, pass_cls.Config.model_fields[config_field].default)
            try:
                out[key] = adapter.validate_python(value)
            except ValidationError as exc:
                raise ConfigError(f"{key}: {value!r}: {exc.errors()[0]['msg']}",
                                  hint=f"the {pass_cls.name} pass's {config_field}") from None
    return out


__all__ = ["DistillSchedule", "SearchSpace", "OptimizeSettings", "parse_duration"]


class SearchSpace(BaseModel):
    """What `edgekit optimize` may try. Defaults: each registered pass's searchable fields with
    their declared choices (`Pass.search`: prune 0, 0.25, 0.5; dwsep off or auto), every runtime
    and precision the device profile lists, int8 with and without float fallbacks. The pass
    knobs are keys of the space (`space.prune`), checked against each pass's own Config; no
    other key is accepted (as extra="forbid")."""

    model_config = ConfigDict(extra="allow")

    runtimes: list[str] | None = Field(
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

    @model_validator(mode="before")
    @classmethod
    def _pass_knobs(cls, data: Any) -> Any:
        return _check_knobs(data, set(cls.model_fields)) if isinstance(data, dict) else data

    @field_validator("runtimes")
    @classmethod
    def _runtimes(cls, value: list[str] | None) -> list[str] | None:
        known = runtimes()
        for name in value or []:
            if name not in known:
                from edgekit.registry import suggest

                raise ValueError(f"unknown runtime {name!r}: {suggest(name, known)}")
        return value

    def knob_values(self) -> dict[str, list[Any]]:
        """{knob: its choices} for every pass knob, in the passes' usual order."""
        return {k.name: list(getattr(self, k.name)) for k in knobs()}

    def categoricals(self) -> dict[str, list[Any]]:
        """{knob: its choices as the study's categorical takes them}: numbers as they are,
        mixed choices (dwsep's off, auto, 2) as strings."""
        return {name: categorical(values) for name, values in self.knob_values().items()}

    def has_original(self) -> bool:
        """Whether every knob can be off (the original architecture is in the space)."""
        return all(any(k.is_off(v) for v in getattr(self, k.name)) for k in knobs())

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
        return any(not k.is_off(v) for k in knobs() for v in getattr(self, k.name))

    def targets(self, device: Any) -> list[str]:
        """'runtime:precision' pairs the device profile lists and this space allows."""
        known = runtimes()
        wanted = self.runtimes or [r for r in device.runtimes if r in known]
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
        archs = 1
        for values in self.knob_values().values():
            archs *= len(values)
        return archs * per_arch


def categorical(values: list[Any]) -> list[Any]:
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return list(values)
    return [str(v) for v in values]


def original_params() -> Params:
    """The study's params of the original architecture: every knob off."""
    return {k.name: categorical([k.off])[0] for k in knobs()}


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
        own = set(OptimizeSettings.model_fields) - set(SearchSpace.model_fields)
        return SearchSpace.model_validate({k: v for k, v in self.model_dump().items()
                                           if k not in own})


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
    """(kept for callers) the dwsep knob's label of a choice."""
    return next(k for k in knobs() if k.name == "dwsep").label(choice)
