"""The Pass abstraction (as Olive's Pass with its config schema, torchao's typed configs).

A pass has a pydantic config (extra="forbid": a typo in a recipe is an error, not a silent default)
and `apply(subject, ctx)`. Torch passes (prune, dwsep, distill) take and return a ModelBundle;
ONNX passes (quantize) take the fp32 ONNX path and return the path they wrote. Passes register by
name on subclassing."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from edgekit.config import validate
from edgekit.data.given import DataSources
from edgekit.errors import ConfigError, DataError

PASSES: dict[str, type[Pass]] = {}
# The one list of steps, in their usual order. A pass named N lives in edgekit/passes/N.py and
# registers itself there by subclassing; modules are imported on demand (most import torch).
PASS_NAMES = ("prune", "dwsep", "distill", "quantize")
PASS_MODULES = {name: f"edgekit.passes.{name}" for name in PASS_NAMES}  # derived, for callers


class PassConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Pass:
    name: ClassVar[str]
    kind: ClassVar[Literal["torch", "onnx"]] = "torch"
    Config: ClassVar[type[PassConfig]] = PassConfig

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if getattr(cls, "name", None):
            PASSES[cls.name] = cls

    def __init__(self, config: PassConfig | dict[str, Any] | None = None) -> None:
        if not isinstance(config, PassConfig):
            config = validate(self.Config, dict(config or {}), f"{self.name} step")
        self.config = config

    def check(self, subject: Any, ctx: PassContext) -> None:
        """Raise for a configuration this model cannot take (a layer pattern that matches
        nothing, say) before anything is written. Every pass gets the loaded bundle (ONNX passes
        use its InputSpec: the quantize pass checks its calibration and eval sets)."""

    def apply(self, subject: Any, ctx: PassContext) -> Any:
        raise NotImplementedError

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


def get_pass(name: str) -> type[Pass]:
    if name not in PASS_NAMES:
        raise ConfigError(f"unknown step {name!r}", hint=f"steps are: {', '.join(PASS_NAMES)}")
    importlib.import_module(f"edgekit.passes.{name}")
    return PASSES[name]
