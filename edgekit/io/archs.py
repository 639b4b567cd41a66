"""Which architectures a model file may name, and with which keyword arguments.

An edgekit checkpoint records `arch` ("module:factory") and `arch_kwargs`; loading it calls that
factory. A file is not the user: the architecture it names must be one of an explicit list of
model factories, never "anything importable under a module prefix" (which once let a file call
`torchvision.models._api:load_state_dict_from_url` and unpickle a URL of its choosing):

  * the zoo's registered entries (`edgekit.zoo.ZOO`, e.g. "edgekit.zoo:lenet5");
  * torchvision's registered model builders (`torchvision.models.list_models()`), named either
    "torchvision.models:<registered name>" or by the builder's own module or a package above it
    that exports it ("torchvision.models.resnet:resnet18", "torchvision.models.detection:…");
  * timm's models when timm is installed ("timm:<name>", built with pretrained=False).

Nothing on this list may download while it builds: the file's kwargs may not name weights,
pretrained flags, URLs, paths or folders (UnsafeModelError), and every `weights*` parameter of a
torchvision builder is passed as None (their backbones default to downloading ImageNet weights).
An `--arch` the user types is the user's choice and does not go through this list.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any

from edgekit.errors import ModelLoadError, UnsafeModelError, shown
from edgekit.spec import InputSpec

HINT = "pass --arch yourself (and --arch-kwargs), or --trust-model if you trust this file"
# A key that chooses weights (any value), or a key naming a place (a string value), or a string
# that looks like a URL or a path: a model file may pass none of these to a factory.
_WEIGHTS_KEY = re.compile(r"^(weights|pretrained)|url|checkpoint", re.IGNORECASE)
_PLACE_TOKENS = {"dir", "path", "file", "filename", "root", "url", "hub", "cache", "download",
                 "source", "location", "cfg", "overlay", "repo"}
_URL_OR_PATH = re.compile(r"://|[/\\]|^~|^\.\.?$", re.IGNORECASE)


@functools.cache
def _torchvision_factories() -> dict[str, Callable[..., Any]]:
    """"module:attr" -> builder for every registered torchvision model (all tasks)."""
    try:
        import torchvision.models as tvm
    except ImportError:
        return {}
    table: dict[str, Callable[..., Any]] = {}
    for name in tvm.list_models():
        builder = tvm.get_model_builder(name)
        table[f"torchvision.models:{name}"] = builder
        parts = builder.__module__.split(".")
        for depth in range(2, len(parts) + 1):  # torchvision.models … the builder's own module
            module = sys.modules.get(".".join(parts[:depth]))
            if module is not None and getattr(module, builder.__name__, None) is builder:
                table[f"{module.__name__}:{builder.__name__}"] = builder
    return table


def _zoo_factories() -> dict[str, Callable[..., Any]]:
    # The zoo sits above io; its table is imported by name, as a plugin (as io/models.py does
    # with the passes' surgeries), so io never imports upward.
    zoo = importlib.import_module("edgekit.zoo")

    table = {}
    for factory in zoo.ARCHITECTURES:
        module_name, _, attr = factory.partition(":")
        table[factory] = getattr(importlib.import_module(module_name), attr)
    return table


def _timm_factory(arch: str) -> Callable[..., Any] | None:
    module_name, _, name = arch.partition(":")
    if module_name not in ("timm", "timm.models") or not name:
        return None
    try:
        import timm
    except ImportError:
        return None
    if name not in set(timm.list_models()):
        return None
    return functools.partial(timm.create_model, name, pretrained=False)


def model_factories() -> dict[str, Callable[..., Any]]:
    """Every "module:factory" a model file may name (timm's, when installed, are resolved by
    name in `file_factory` rather than listed: there are over a thousand)."""
    return {**_zoo_factories(), **_torchvision_factories()}


def file_factory(arch: Any, *, who: str = "the checkpoint", hint: str = HINT
                 ) -> Callable[..., Any]:
    """The factory a model file (or a recipe: `who`, `hint`) names, when it is on the list;
    UnsafeModelError otherwise. Never imports a module the file chose (the list is built from
    what is installed)."""
    if not isinstance(arch, str):
        raise ModelLoadError(f"{who}'s arch is a {type(arch).__name__}, not a "
                             "'module:factory' string", hint="re-save it with edgekit, or " + hint)
    # each table only for a name in its own namespace: torchvision's (every model of every task
    # imported, torch._dynamo with them: ~3.6 s) is built for a torchvision name only
    factory = _zoo_factories().get(arch)
    if factory is None and arch.split(".", 1)[0].split(":", 1)[0] == "torchvision":
        factory = _torchvision_factories().get(arch)
    if factory is None:
        factory = _timm_factory(arch)
    if factory is None:
        raise UnsafeModelError(
            f"{who} names architecture {shown(arch)}, which is not a model factory edgekit "
            "lists (the zoo's models, torchvision's and timm's registered models); building it "
            "would run code the file chose", hint=hint)
    return factory


def check_file_kwargs(arch: str, kwargs: Mapping[str, Any], *, who: str = "the checkpoint",
                      hint: str = HINT) -> None:
    """Refuse kwargs from a file (a model file or a recipe: `who`) that would download or read
    something: weights and pretrained flags, URLs, paths and folders (at any depth)."""
    def refuse(what: str) -> UnsafeModelError:
        return UnsafeModelError(f"{who} passes {what} to {arch}: a model file or recipe may not "
                                "choose weights, URLs, paths or folders (loading must not "
                                "download or read other files)", hint=hint)

    def walk(value: Any, where: str) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise ModelLoadError(f"{where} has a non-string key {shown(key)}", hint=hint)
                tokens = set(re.split(r"[_\W]+", key.lower()))
                if _WEIGHTS_KEY.search(key) or (tokens & _PLACE_TOKENS and not isinstance(
                        item, bool | int | float | type(None))):
                    raise refuse(f"{where}.{key}")
                walk(item, f"{where}.{key}")
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item, where)
        elif isinstance(value, str) and _URL_OR_PATH.search(value):
            raise refuse(f"{where} = {value[:60]!r}")

    walk(kwargs, "arch_kwargs")


def offline_kwargs(factory: Callable[..., Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """kwargs with every weights*/pretrained* parameter of `factory` set so it downloads
    nothing (None, or False for a boolean pretrained flag)."""
    out = dict(kwargs)
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return out
    for name, param in params.items():
        if param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
            continue
        if name.startswith("weights"):
            out[name] = None
        elif name.startswith("pretrained"):
            out[name] = False if isinstance(param.default, bool) else None
    return out


def known_preprocessing(arch: str | None, model: Any) -> InputSpec | None:
    """The input contract an architecture family documents, when the user gave none: torchvision's
    ImageNet transforms (resize 256, centre crop 224, ImageNet mean/std), timm's `pretrained_cfg`
    (input size, crop_pct, mean, std), the zoo's own; None when nothing is known."""
    arch = arch or ""
    if arch.startswith("torchvision"):
        return InputSpec(shape=(1, 3, 224, 224), mean=(0.485, 0.456, 0.406),
                         std=(0.229, 0.224, 0.225), resize=256)
    if arch.partition(":")[0] in ("timm", "timm.models"):
        cfg = dict(getattr(model, "pretrained_cfg", None) or {})
        c, h, w = tuple(cfg.get("input_size") or (3, 224, 224))
        mean, std = tuple(cfg.get("mean") or ()), tuple(cfg.get("std") or ())
        if not mean or not std:
            return None
        crop_pct = float(cfg.get("crop_pct") or 1.0)
        return InputSpec(shape=(1, c, h, w), mean=mean, std=std,
                         resize=max(h, w, int(round(min(h, w) / crop_pct))))
    zoo = importlib.import_module("edgekit.zoo")  # by name, as above: io never imports upward
    for entry in zoo.ZOO.values():
        if arch in (entry.factory, f"edgekit.zoo:{entry.name}"):
            return zoo.default_spec(entry.name)
    return None
