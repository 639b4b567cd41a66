"""The Pass abstraction (as Olive's Pass with its config schema, torchao's typed configs).

A pass has a pydantic config (extra="forbid": a typo in a recipe is an error, not a silent default)
and `apply(subject, ctx)`. Torch passes (prune, dwsep, distill) take and return a ModelBundle;
ONNX passes (quantize) take the fp32 ONNX path and return the path they wrote. Passes register by
name on subclassing."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from edgekit.config import parse_as
from edgekit.data.given import DataSources
from edgekit.errors import ConfigError, DataError

# Filled by subclassing. A pass named N lives in edgekit/passes/N.py (or in any module that is
# imported: a plugin) and registers itself there; `pass_names()` imports edgekit/passes/ once.
PASSES: dict[str, type[Pass]] = {}
_UNAVAILABLE: dict[str, ImportError] = {}  # pass modules that could not be imported, and why
_SCANNED: list[bool] = []  # edgekit/passes/ imported once (plugins register when imported)


@dataclass(frozen=True)
class Knob:
    """One field of a pass that `edgekit optimize` searches (as Olive's `search_defaults`): the
    space's key (also the CLI flag `--NAME` and a candidate's label), the pass Config field a
    choice sets, the choices searched by default, and the choice that leaves the pass out.

    `settings`: space keys fixed for a whole search -> the Config fields they set (their default
    is the Config's); `device`: Config fields set from the device profile (e.g. round_to);
    `keyed`: which settings a built candidate's cache key holds for a choice (default: all of
    them whenever the pass runs). `label(value)` names a choice in a candidate's name; `parse`
    reads one choice from the command line. The adapt step (`edgekit.optimize.adapt`) drops a
    choice the pass refuses on this model: `Pass.check` raising, or `Pass.inapplicable`."""

    name: str
    field: str
    default: tuple[Any, ...]
    off: Any
    help: str = ""
    settings: Mapping[str, str] = field(default_factory=dict)
    device: Mapping[str, str] = field(default_factory=dict)
    keyed: Callable[[Any], tuple[str, ...]] | None = None
    label: Callable[[Any], str] = str
    parse: Callable[[str], Any] = str
    sort: bool = False  # choices are kept sorted and unique (ratios)
    # what a choice that changed nothing did ("substitutes no conv of this model"): optimize
    # then drops that choice from the space instead of timing a copy of the original
    unchanged: str = ""

    def is_off(self, value: Any) -> bool:
        return value == self.off or str(value) == str(self.off)

    def key_settings(self, value: Any) -> tuple[str, ...]:
        if self.is_off(value):
            return ()
        return tuple(self.keyed(value)) if self.keyed else tuple(self.settings)


class PassConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Pass:
    """A compression step. What a pass declares on its class is all the rest of edgekit knows
    of it: its `Config`, its `kind` (torch passes run before onnx ones), its searchable fields
    (`search`: the knobs of `edgekit optimize`'s space), its ordering constraints (`runs_before`:
    passes that, when a chain has both, must come after this one, with `order_hint` saying why;
    as ModelOpt's `next_prohibited_modes` seen from the other side) and `order`, its place in
    the usual chain (for listings)."""

    name: ClassVar[str]
    kind: ClassVar[Literal["torch", "onnx"]] = "torch"
    Config: ClassVar[type[PassConfig]] = PassConfig
    search: ClassVar[tuple[Knob, ...]] = ()
    runs_before: ClassVar[tuple[str, ...]] = ()
    order_hint: ClassVar[str] = ""
    order: ClassVar[int] = 100

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if getattr(cls, "name", None):
            PASSES[cls.name] = cls

    def __init__(self, config: PassConfig | dict[str, Any] | None = None) -> None:
        if not isinstance(config, PassConfig):
            config = parse_as(self.Config, dict(config or {}), f"{self.name} step")
        self.config = config

    def check(self, subject: Any, ctx: PassContext) -> None:
        """Raise for a configuration this model cannot take (a layer pattern that matches
        nothing, say) before anything is written. Every pass gets the loaded bundle (ONNX passes
        use its InputSpec: the quantize pass checks its calibration and eval sets)."""

    def apply(self, subject: Any, ctx: PassContext) -> Any:
        raise NotImplementedError

    @classmethod
    def inapplicable(cls, bundle: Any, config: PassConfig) -> str | None:
        """Why this pass, so configured, would change nothing in this model, found cheaply
        (a plan, no training data), else None: `edgekit optimize` drops such a choice from its
        space before building any candidate (edgekit/optimize/adapt.py)."""
        return None

    def outputs(self) -> list[str]:
        """Names of the files this pass writes into the output folder (checked against the
        inputs before anything runs)."""
        return []


@dataclass
class PassContext:
    """What passes share during one compress run: the original model (the teacher), data
    sources, the output folder, and the report every pass appends its rows to."""

    out_dir: Path
    original: Any = None  # ModelBundle before any pass: distillation's teacher
    data: DataSources = field(default_factory=DataSources)  # train / eval / calib, data_dir
    # The accuracy budget of the whole chain against the original (compress --max-drop /
    # --max-drop-rel); the quantize step's own max_drop bounds the chain too.
    max_drop: float | None = None
    max_drop_rel: float | None = None
    original_top1: float | None = None  # the original's top-1 on the eval set, once measured
    num_outputs: int | None = None  # the model's, once known: eval folders' classes → outputs
    train: Any = None  # TrainSettings (edgekit.zoo.accel): where and how training runs
    report: list[dict[str, Any]] = field(default_factory=list)
    _cache: dict[str, Any] = field(default_factory=dict)

    # The data sources by the names the passes read them (one DataSources object holds them).
    @property
    def train_source(self) -> str | None:
        return self.data.train

    @property
    def eval_source(self) -> str | None:
        return self.data.eval

    @property
    def calib_source(self) -> str | None:
        return self.data.calib

    @property
    def data_dir(self) -> str | None:
        return self.data.data_dir

    @property
    def eval_limit(self) -> int | None:
        return self.data.eval_limit

    def eval_set(self, spec: Any, *, required: bool = True):
        """The eval Dataset for this spec (cached); None or an error when no --eval was given."""
        if self.eval_source is None:
            if required:
                raise DataError("this step needs an eval set", hint="pass --eval SOURCE, e.g. "
                                "--eval fashion-mnist:test")
            return None
        key = f"eval:{spec.to_json()}"
        if key not in self._cache:
            from edgekit.data import load_dataset

            self._cache[key] = load_dataset(self.eval_source, spec, data_dir=self.data_dir,
                                            limit=self.eval_limit)
            self._cache[key].check_for(spec, need_labels=True)
            if self.num_outputs:
                self._cache[key] = self._cache[key].for_outputs(spec, self.num_outputs)
            self._same_classes()
        return self._cache[key]

    def train_images(self):
        """Raw uint8 training images (augmented by the trainer); error when no --train was given."""
        if self.train_source is None:
            raise DataError("this step trains, and no training data was given",
                            hint="pass --train SOURCE, e.g. --train fashion-mnist:train")
        if "train" not in self._cache:
            from edgekit.data import load_raw

            self._cache["train"] = load_raw(self.train_source, data_dir=self.data_dir)
            self._same_classes()
        return self._cache["train"]

    def _same_classes(self) -> None:
        """Train and eval image folders name the same classes (checked once both are loaded)."""
        from edgekit.data.dataset import check_same_classes

        train = self._cache.get("train")
        evals = [v for k, v in self._cache.items() if k.startswith("eval:")]
        if train is not None and evals:
            check_same_classes(getattr(train, "class_names", ()), self.train_source,
                               evals[0].class_names, self.eval_source)

    def add_row(self, **row: Any) -> None:
        self.report.append(row)


def pass_names() -> tuple[str, ...]:
    """Every registered pass, in their usual order (torch passes, then onnx ones; `order`). The
    modules of edgekit/passes/ are imported once (most import torch); one whose library is
    missing is left out here and its pass says why in `get_pass`."""
    if not _SCANNED:
        from edgekit.registry import module_names

        for module in module_names("edgekit.passes"):
            try:
                importlib.import_module(f"edgekit.passes.{module}")
            except ImportError as exc:
                _UNAVAILABLE[module] = exc
        _SCANNED.append(True)
    return tuple(sorted(PASSES, key=lambda n: (PASSES[n].kind != "torch", PASSES[n].order, n)))


def get_pass(name: str) -> type[Pass]:
    if name not in PASSES:
        names = pass_names()
        if name in _UNAVAILABLE:
            raise _UNAVAILABLE[name]
        if name not in PASSES:
            raise ConfigError(f"unknown step {name!r}", hint=f"steps are: {', '.join(names)}")
    return PASSES[name]


def order_violation(earlier: str, later: str) -> str | None:
    """Why `later` may not come after `earlier` in one chain (their declarations), else None."""
    then = PASSES[later]
    if earlier in then.runs_before:
        return then.order_hint or f"{later} runs before {earlier}; reorder the steps"
    return None


def search_knobs() -> tuple[tuple[type[Pass], Knob], ...]:
    """The searchable fields of every registered pass, in the passes' usual order: the
    dimensions of `edgekit optimize`'s space besides runtime, precision and int8 fallback."""
    return tuple((PASSES[n], k) for n in pass_names() for k in PASSES[n].search)
