"""Options shared by several commands, and output helpers."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click

from edgekit.spec import parse_shape


def model_options(fn: Callable) -> Callable:
    """--arch, --arch-kwargs, --input-shape, --trust-model: how to load a model file."""
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
    return click.option("--data-dir", type=click.Path(file_okay=False), default=None,
                        help="Folder with the built-in data sets' files (default: $EDGEKIT_DATA, "
                        "then the Debian package's location).")(fn)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
