"""Options shared by several commands, and output helpers."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click

from edgekit.spec import parse_shape


def _floats(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        return tuple(float(v) for v in value.split(","))
    except ValueError:
        from edgekit.errors import InputError

        raise InputError(f"--{param.name} {value!r} is not comma-separated numbers",
                         hint=f"e.g. --{param.name} 0.485,0.456,0.406") from None


PREPROCESSING_FLAGS = ("mean", "std", "resize", "crop", "channel_order", "preprocessing")


def _given_preprocessing(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Pop the preprocessing flags from a command's kwargs: {key: value} of those given, with
    --preprocessing NAME as key `preset`."""
    values = {k: kwargs.pop(k) for k in PREPROCESSING_FLAGS}
    values["preset"] = values.pop("preprocessing")
    return {k: v for k, v in values.items() if v is not None}


def _preprocessing_flags(fn: Callable) -> Callable:
    from edgekit.spec import PRESET_HELP

    fn = click.option("--preprocessing", default=None, metavar="PRESET",
                      help="A named preprocessing preset (the flags above override its fields): "
                      + PRESET_HELP + ".")(fn)
    fn = click.option("--channel-order", type=click.Choice(["RGB", "BGR"], case_sensitive=False),
                      default=None, help="Channel order the model expects (default RGB).")(fn)
    fn = click.option("--crop", type=click.IntRange(min=1), default=None,
                      help="Centre crop (the model's input H and W), after --resize.")(fn)
    fn = click.option("--resize", type=click.IntRange(min=1), default=None,
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
        from edgekit.io.models import preprocessing_from_cli

        with preprocessing_from_cli(_given_preprocessing(kwargs)):
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
            from edgekit.spec import preset_values

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
    return click.option("--json", "as_json", is_flag=True,
                        help="Print machine-readable JSON on stdout instead of a table.")(fn)


def data_dir_option(fn: Callable) -> Callable:
    """--data-dir, and --skip-bad-images for image folders (in scope of every data load)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from edgekit.data.folders import skipping_bad_images

        with skipping_bad_images(kwargs.pop("skip_bad_images")):
            return fn(*args, **kwargs)

    wrapper = click.option("--skip-bad-images", is_flag=True,
                           help="Leave unreadable files in image folders out (counted in the "
                           "record) instead of stopping.")(wrapper)
    return click.option("--data-dir", type=click.Path(file_okay=False), default=None,
                        help="Folder with the built-in data sets' files (default: $EDGEKIT_DATA, "
                        "then the Debian package's location).")(wrapper)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
