"""Where a model's preprocessing comes from: the presets a user may name, the one rule that takes
each field from the file, a named preset or the user's flags (never a guess), and the line that
says where each field came from. Ground floor: edgekit.spec's InputSpec and the errors only."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

from edgekit.errors import InputError
from edgekit.spec import InputSpec

# Presets a user may name (--preprocessing NAME, a recipe's input.preprocessing, the API's
# preprocessing={"preset": NAME}); "arch" is resolved by edgekit.io.models (the architecture's
# documented preprocessing: torchvision's ImageNet transforms, timm's pretrained_cfg, the zoo's).
PRESETS: dict[str, InputSpec] = {
    "imagenet": InputSpec(shape=(1, 3, 224, 224), mean=(0.485, 0.456, 0.406),
                          std=(0.229, 0.224, 0.225), resize=256),
    "fashion-mnist": InputSpec(shape=(1, 1, 28, 28), mean=(0.2860,), std=(0.3530,)),
    "mnist": InputSpec(shape=(1, 1, 28, 28), mean=(0.1307,), std=(0.3081,)),
    "cifar10": InputSpec(shape=(1, 3, 32, 32), mean=(0.4914, 0.4822, 0.4465),
                         std=(0.2470, 0.2435, 0.2616)),
}
PRESET_NAMES = (*PRESETS, "arch")
PRESET_HELP = ("imagenet (224x224 after resize 256, ImageNet mean/std), fashion-mnist (1x28x28), "
               "mnist (1x28x28), cifar10 (3x32x32), arch (what the architecture documents: "
               "torchvision's ImageNet transforms, timm's pretrained_cfg, the zoo's own)")
PROVENANCE_FIELDS = ("shape", "resize", "mean", "std", "channel_order")
# The keys a user's preprocessing mapping may hold (flags, recipe keys, API keyword).
PREPROCESSING_KEYS = ("preset", "input_shape", "mean", "std", "resize", "crop", "channel_order")


class Preprocessing(TypedDict, total=False):
    """A user's preprocessing (the flags, a recipe's input.preprocessing, the API's keyword):
    any of PREPROCESSING_KEYS, each taken over what the file records (resolve_preprocessing)."""

    preset: str
    input_shape: tuple[int, ...]
    mean: Sequence[float]
    std: Sequence[float]
    resize: int | None
    crop: int | None
    channel_order: str


def preset_values(name: str) -> Preprocessing:
    """A preset as the flags it stands for (mean, std, resize, crop), to compare with what an
    artifact records ("arch" names no fixed values: InputError)."""
    if name not in PRESETS:
        raise InputError(f"unknown preprocessing preset {name!r}"
                         + _did_you_mean(name, PRESET_NAMES),
                         hint="an artifact records its preprocessing; the presets with fixed "
                         f"values are {', '.join(PRESETS)}")
    spec = PRESETS[name]
    return {"mean": spec.mean, "std": spec.std, "resize": spec.resize, "crop": spec.height}


def _text(values: Sequence[float]) -> str:
    return ",".join(f"{v:g}" for v in values)


def describe_provenance(spec: InputSpec, provenance: Mapping[str, str]) -> str:
    """One line: each preprocessing field and where it came from (file / flag / preset)."""
    values = {"shape": ",".join(map(str, spec.shape)),
              "resize": str(spec.resize) if spec.resize else f"none (scaled to {spec.height}x"
                                                               f"{spec.width})",
              "mean": _text(spec.mean), "std": _text(spec.std),
              "channel_order": spec.channel_order}
    sources = {provenance.get(name, "file") for name in PROVENANCE_FIELDS}
    if len(sources) == 1:  # one source for every field: said once
        return "preprocessing: " + "; ".join(
            f"{name.replace('_', ' ')} {values[name]}" for name in PROVENANCE_FIELDS) + \
            f" (all from the {sources.pop()})"
    return "preprocessing: " + "; ".join(
        f"{name.replace('_', ' ')} {values[name]} ({provenance.get(name, 'file')})"
        for name in PROVENANCE_FIELDS)


def resolve_preprocessing(recorded: InputSpec | None, given: Mapping[str, Any] | None, *,
                          what: str, preset_spec: InputSpec | None = None,
                          channels: int | None = None, api: bool = False
                          ) -> tuple[InputSpec, dict[str, str]]:
    """The one rule for a model's preprocessing: each field comes from the file (`recorded`),
    from an explicit preset the user names (`given["preset"]`; `preset_spec` when the caller
    resolved it, e.g. "arch"), or from the user's flags (input_shape, mean, std, resize, crop,
    channel_order), later ones overriding earlier ones. A field known from none of them is never
    guessed: InputError naming the exact flags to pass. Returns the spec and, per field, where
    it came from ("file", "preset NAME", "--flag"). `channels` (the weights' first layer) fills
    C when only H×W are given (--crop). `api`: name keyword arguments (mean=...) instead of
    flags, for the Python API."""
    given = {k: v for k, v in (given or {}).items() if v is not None}
    unknown = sorted(set(given) - set(PREPROCESSING_KEYS))
    if unknown:
        raise InputError(f"unknown preprocessing key {unknown[0]!r}"
                         + _did_you_mean(unknown[0], PREPROCESSING_KEYS),
                         hint=f"preprocessing keys: {', '.join(PREPROCESSING_KEYS)}")
    spec = recorded
    prov: dict[str, str] = dict.fromkeys(PROVENANCE_FIELDS, "file") if recorded else {}
    if given.get("preset") is not None:
        spec = _apply_preset(spec, given, prov, preset_spec, channels, what)
    shape = given.get("input_shape")
    if spec is None:
        spec, given = _spec_from_flags(given, prov, channels, what, api)
    if shape is not None and tuple(shape) != spec.shape:
        before = spec.resize
        spec = spec.with_shape(shape)
        prov["shape"] = "--input-shape"
        if before is not None:
            prov["resize"] = f"{prov.get('resize', 'file')}, scaled to the new input size"
    rest = {k: given[k] for k in ("mean", "std", "resize", "crop", "channel_order") if k in given}
    if rest:
        before_resize = spec.resize
        crop_changes = "crop" in rest and (rest["crop"], rest["crop"]) != (spec.height, spec.width)
        spec = spec.with_preprocessing(**rest)
        for key in ("mean", "std", "resize", "channel_order"):
            if key in rest:
                prov[key] = f"--{key.replace('_', '-')}"
        if crop_changes:
            prov["shape"] = "--crop"
            if "resize" not in rest and before_resize is not None:
                prov["resize"] = f"{prov.get('resize', 'file')}, scaled to --crop"
    if api:  # keyword arguments, not flags
        prov = {k: re.sub(r"--([a-z-]+)", lambda m: m.group(1).replace("-", "_") + "=", v)
                for k, v in prov.items()}
    return spec, prov


def _did_you_mean(name: str, known: Sequence[str]) -> str:
    import difflib

    close = difflib.get_close_matches(str(name), known, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _apply_preset(spec: InputSpec | None, given: Mapping[str, Any], prov: dict[str, str],
                  preset_spec: InputSpec | None, channels: int | None, what: str) -> InputSpec:
    """`spec` with the shape, mean, std and resize of the preset `given["preset"]` (recording
    where each came from in `prov`); refused for a preset of another channel count than the
    weights' unless --input-shape says otherwise."""
    preset = given["preset"]
    if preset_spec is None:
        if preset not in PRESETS:
            raise InputError(f"unknown preprocessing preset {preset!r}"
                             + _did_you_mean(preset, PRESET_NAMES),
                             hint=f"--preprocessing takes {PRESET_HELP}")
        preset_spec = PRESETS[preset]
    update = {k: getattr(preset_spec, k) for k in ("shape", "mean", "std", "resize")}
    spec = spec.model_copy(update=update) if spec else preset_spec.model_copy()
    prov.update(dict.fromkeys(("shape", "mean", "std", "resize"), f"preset {preset}"))
    prov.setdefault("channel_order", f"preset {preset}")
    if channels is not None and preset_spec.channels != channels and "input_shape" not in given:
        raise InputError(f"preset {preset} is for {preset_spec.channels}-channel inputs; "
                         f"{what} takes {channels}",
                         hint=f"name a preset for {channels}-channel inputs, or pass "
                         f"--input-shape 1,{channels},H,W --mean ... --std ...")
    return spec


def _spec_from_flags(given: dict[str, Any], prov: dict[str, str], channels: int | None,
                     what: str, api: bool) -> tuple[InputSpec, dict[str, Any]]:
    """A spec from the user's flags alone (nothing recorded, no preset): its shape from
    --input-shape (or --crop with the weights' channels), mean/std left for
    with_preprocessing to set. Refused, with the flags to pass, when any of them is missing.
    Returns the spec and what of `given` is left to apply."""
    shape, crop = given.get("input_shape"), given.get("crop")
    c = int(shape[1]) if shape else channels
    hw = (int(shape[2]), int(shape[3])) if shape else (crop, crop) if crop else None
    lacks_shape = hw is None or c is None
    lacks_norm = "mean" not in given or "std" not in given
    if lacks_shape or lacks_norm:
        raise _missing_preprocessing(what, c, lacks_shape, lacks_norm, api)
    # mean/std are set by with_preprocessing, which names a wrong channel count
    spec = InputSpec(shape=(int(shape[0]) if shape else 1, c, *hw), mean=(0.0,), std=(1.0,))
    flag = "--input-shape" if shape else "--crop; channels from the weights"
    prov.update({"shape": flag, "resize": "no --resize", "mean": "--mean", "std": "--std",
                 "channel_order": "default"})
    given = {k: v for k, v in given.items() if k != "input_shape"}
    if not shape:
        given.pop("crop", None)  # it gave H×W above
    return spec, given


def _missing_preprocessing(what: str, c: int | None, lacks_shape: bool, lacks_norm: bool,
                           api: bool) -> InputError:
    """The refusal of a model that records no preprocessing, naming the flags (or, for the
    Python API, the keyword arguments) that would give what is missing."""
    from edgekit.errors import MissingPreprocessingError

    n = c or 1
    mean = (0.485, 0.456, 0.406) if c == 3 else (0.5,) * n
    std = (0.229, 0.224, 0.225) if c == 3 else (0.5,) * n
    if api:
        missing = [f"input_shape=(1, {c or 'C'}, H, W)"] if lacks_shape else []
        missing += [f"mean={mean}, std={std}"] if lacks_norm else []
        hint = (f"pass what the model was trained with: {', '.join(missing)} (and "
                "resize=R if it was trained on centre crops), or name a preset: "
                f"preprocessing={' | '.join(repr(p) for p in PRESET_NAMES)}")
    else:
        missing = [f"--input-shape 1,{c or 'C'},H,W"] if lacks_shape else []
        missing += [f"--mean {_text(mean)} --std {_text(std)}"] if lacks_norm else []
        hint = (f"pass what the model was trained with: {' '.join(missing)} (and "
                "--resize R if it was trained on centre crops), or name a preset: "
                f"--preprocessing {'|'.join(PRESET_NAMES)}")
    lacks = " and ".join(x for x in [
        "its input shape" if lacks_shape else "",
        "how its inputs are normalised (mean, std)" if lacks_norm else ""] if x)
    return MissingPreprocessingError(
        f"{what} does not record its preprocessing: edgekit does not know {lacks}, and "
        "guessing would make every accuracy wrong", hint=hint,
        flags=(", " if api else " ").join(missing), lacks=lacks)
