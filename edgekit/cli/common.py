"""Options shared by several commands, and output helpers."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from typing import Any

import click

from edgekit.spec import parse_shape


class Number(click.ParamType):
    """A finite number within bounds, for every flag that takes a limit or a statistic
    (--max-drop, --min-speedup, ...): NaN, inf and out-of-range values are a usage error (exit 2)
    naming the value, never a traceback or a silently accepted budget."""

    name = "number"

    def __init__(self, low: float | None = None, high: float | None = None, *,
                 low_open: bool = False, high_open: bool = False) -> None:
        self.low, self.high, self.low_open, self.high_open = low, high, low_open, high_open

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{str(value)[:40]!r} is not a number", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value} is not a finite number", param, ctx)
        below = self.low is not None and (number <= self.low if self.low_open else number < self.low)
        above = self.high is not None and (number >= self.high if self.high_open
                                           else number > self.high)
        if below and self.low == 0:
            self.fail(f"{number:g} is " + ("not positive" if self.low_open else "negative")
                      + f" (allowed: {self._range()})", param, ctx)
        if below or above:
            self.fail(f"{number:g} is not in {self._range()}", param, ctx)
        return number

    def _range(self) -> str:
        low = "(-inf" if self.low is None else ("(" if self.low_open else "[") + f"{self.low:g}"
        high = "inf)" if self.high is None else f"{self.high:g}" + (")" if self.high_open else "]")
        return f"{low}, {high}"


FINITE = Number()
DROP = Number(0)  # --max-drop: points, ≥ 0
DROP_REL = Number(0, 1, high_open=True)  # --max-drop-rel
SPEEDUP = Number(0, low_open=True)  # --min-speedup


def _floats(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[float, ...] | None:
    """--mean / --std: comma-separated finite numbers within InputSpec's bounds."""
    if value is None:
        return None
    from edgekit.errors import InputError
    from edgekit.spec import normalisation_problem

    hint = f"e.g. --{param.name} " + ("0.485,0.456,0.406" if param.name == "mean"
                                      else "0.229,0.224,0.225")
    try:
        values = tuple(float(v) for v in value.split(","))
    except ValueError:
        raise InputError(f"--{param.name} {value[:80]!r} is not comma-separated numbers",
                         hint=hint) from None
    if problem := normalisation_problem(str(param.name), values):
        raise InputError(f"--{param.name} {value[:80]}: {problem}", hint=hint)
    return values


PREPROCESSING_FLAGS = ("mean", "std", "resize", "crop", "channel_order", "preprocessing")


def _given_preprocessing(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Pop the preprocessing flags from a command's kwargs: {key: value} of those given, with
    --preprocessing NAME as key `preset`."""
    values = {k: kwargs.pop(k) for k in PREPROCESSING_FLAGS}
    values["preset"] = values.pop("preprocessing")
    return {k: v for k, v in values.items() if v is not None}


def _preprocessing_flags(fn: Callable) -> Callable:
    from edgekit.preprocessing import PRESET_HELP

    fn = click.option("--preprocessing", default=None, metavar="PRESET",
                      help="A named preprocessing preset (the flags above override its fields): "
                      + PRESET_HELP + ".")(fn)
    fn = click.option("--channel-order", type=click.Choice(["RGB", "BGR"], case_sensitive=False),
                      default=None, help="Channel order the model expects (default RGB).")(fn)
    fn = click.option("--crop", type=click.IntRange(min=1), default=None,
                      help="Centre crop (the model's input H and W), after --resize.")(fn)
    from edgekit.limits import MAX_RESIZE

    fn = click.option("--resize", type=click.IntRange(min=1, max=MAX_RESIZE), default=None,
                      help="Resize the shorter side to this before the centre crop.")(fn)
    fn = click.option("--std", callback=_floats, default=None,
                      help="Per-channel std of the model's normalisation, e.g. 0.229,0.224,0.225.")(fn)
    fn = click.option("--mean", callback=_floats, default=None,
                      help="Per-channel mean of the model's normalisation (inputs in 0..1), "
                      "e.g. 0.485,0.456,0.406.")(fn)
    return fn


def preprocessing_options(fn: Callable) -> Callable:
    """--mean, --std, --resize, --crop, --channel-order: the model's own preprocessing, stored in
    its InputSpec (and so in every artifact). The command runs with them in scope of load_model."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from edgekit.data.folders import allowing_upscale
        from edgekit.io.models import preprocessing_from_cli

        given = _given_preprocessing(kwargs)
        # an explicit --resize asks for scaling: images smaller than the input may be scaled up
        with preprocessing_from_cli(given), allowing_upscale(given.get("resize") is not None):
            return fn(*args, **kwargs)

    return _preprocessing_flags(wrapper)


def recorded_preprocessing_options(fn: Callable) -> Callable:
    """The same flags on commands that evaluate artifacts (bench, validate): an artifact
    records its preprocessing, so these may only repeat it (edgekit.io.artifacts.
    check_preprocessing); the command gets them as `preprocessing`."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        given = _given_preprocessing(kwargs)
        preset = given.pop("preset", None)
        if preset is not None:  # its values, under the flags given beside it
            from edgekit.preprocessing import preset_values

            given = {**preset_values(preset), **given}
        kwargs["preprocessing"] = given
        from edgekit.io.models import preprocessing_from_cli

        with preprocessing_from_cli({}):  # in scope: the provenance line is printed
            return fn(*args, **kwargs)

    return _preprocessing_flags(wrapper)


def model_options(fn: Callable) -> Callable:
    """--arch, --arch-kwargs, --input-shape, --trust-model: how to load a model file; and the
    model's preprocessing (preprocessing_options)."""
    fn = preprocessing_options(fn)
    fn = click.option("--trust-model", is_flag=True,
                      help="Allow model files that execute code when loaded (pickled modules, "
                      "TorchScript, .pt2). Only for files you trust.")(fn)
    fn = click.option("--input-shape",
                      callback=lambda c, p, v: None if v is None else parse_shape(v),
                      help="N,C,H,W; sets or overrides the model's recorded input shape.")(fn)
    fn = click.option("--arch-kwargs", default=None, help="JSON keyword arguments for --arch.")(fn)
    fn = click.option("--arch", default=None,
                      help="module:factory that builds the model for a plain state_dict, "
                      "e.g. torchvision.models:resnet18.")(fn)
    return fn


def load_model_from_options(path: str, arch: str | None, arch_kwargs: str | None,
                            input_shape: tuple[int, ...] | None, trust_model: bool):
    from edgekit.io.models import load_model

    return load_model(path, arch=arch, arch_kwargs=arch_kwargs, input_shape=input_shape,
                      trust_model=trust_model)


def json_option(fn: Callable) -> Callable:
    """--json, and --wide for the tables printed instead (every column; default: 100 columns)."""

    def wide(_ctx: Any, _param: Any, value: bool) -> bool:
        from edgekit.results.table import set_wide

        set_wide(value)
        return value

    fn = click.option("--wide", is_flag=True, expose_value=False, callback=wide,
                      help="Show every column of the tables (default: the main ones, in 100 "
                           "columns).")(fn)
    def plain(_ctx: Any, _param: Any, value: bool) -> bool:
        from edgekit.progress import set_plain

        set_plain(value)  # no live bars beside the JSON
        return value

    return click.option("--json", "as_json", is_flag=True, callback=plain,
                        help="Print machine-readable JSON on stdout instead of a table.")(fn)


def train_options(fn: Callable) -> Callable:
    """--train-device and --train-precision: where distillation trains (edgekit.zoo.accel). The
    command gets them as `train_settings` (a TrainSettings, or None when neither was given, so
    a recipe's `training:` or the defaults apply)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        given = {k: v for k, v in (("device", kwargs.pop("train_device")),
                                   ("precision", kwargs.pop("train_precision"))) if v is not None}
        settings = None
        if given:
            from edgekit.config import parse_as
            from edgekit.zoo.accel import TrainSettings

            settings = parse_as(TrainSettings, given, "--train-device/--train-precision")
            settings.check()  # a device torch does not see: exit 2 before anything runs
        return fn(*args, train_settings=settings, **kwargs)

    wrapper = click.option("--train-precision", type=click.Choice(["auto", "fp32", "bf16"]),
                           default=None,
                           help="Training precision: auto (bf16 autocast and channels_last "
                           "where measured faster here, once per machine), fp32 or bf16.")(wrapper)
    return click.option("--train-device", default=None, metavar="auto|cpu|cuda[:N]|mps",
                        help="Where distillation trains (default auto: CUDA when torch sees "
                        "one, else the CPU). Latency is still measured on the target "
                        "device.")(wrapper)


def data_dir_option(fn: Callable) -> Callable:
    """--data-dir, and --skip-bad-images for image folders (in scope of every data load)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from edgekit.data.folders import allowing_upscale, skipping_bad_images

        with skipping_bad_images(kwargs.pop("skip_bad_images")), \
                allowing_upscale(kwargs.pop("allow_upscale")):
            return fn(*args, **kwargs)

    wrapper = click.option("--allow-upscale", is_flag=True,
                           help="Scale up images smaller than the model's input (refused by "
                           "default: it changes what the model sees).")(wrapper)
    wrapper = click.option("--skip-bad-images", is_flag=True,
                           help="Leave unreadable files in image folders out (counted in the "
                           "record) instead of stopping.")(wrapper)
    return click.option("--data-dir", type=click.Path(file_okay=False), default=None,
                        help="Folder with the built-in data sets' files (default: $EDGEKIT_DATA, "
                        "then the Debian package's location).")(wrapper)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
