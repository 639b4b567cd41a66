"""What edgekit checks of a model before it builds, measures or exports it: an edgekit
checkpoint's fields and a state_dict's declared sizes (before anything is allocated), finite
weights, and one forward pass at the input spec's shape, with the layer and the flags to pass when
it fails (edgekit.io.models loads the files)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.errors import ModelLoadError
from edgekit.spec import InputSpec

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from edgekit.io.models import ModelBundle


def first_conv(model: Any) -> tuple[str, int] | None:
    """(name, in_channels) of the model's first 2-D convolution, in registration order (what
    the model's first layer most likely is); None when it has none."""
    from torch import nn

    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, int(module.in_channels)
    return None


def shape_hint(model: Any) -> str:
    """--input-shape advice for a model that records none, with its channels when known."""
    conv = first_conv(model)
    if conv is None:
        return "pass --input-shape N,C,H,W at the size it was trained at, e.g. --input-shape 1,3,224,224"
    name, c = conv[0] or "its first layer", conv[1]
    return (f"pass --input-shape 1,{c},H,W with the H and W it was trained at ({name} takes "
            f"{c} channel{'s' if c > 1 else ''}), e.g. --input-shape 1,{c},64,64")


def forward_inputs(model: Any) -> list[str] | None:
    """Names of the positional inputs model.forward requires, None when it cannot be read."""
    import inspect

    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError, AttributeError):
        return None
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return None
    return [p.name for p in params if p.default is p.empty and p.kind in (
        p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def check_checkpoint(obj: dict[str, Any], path: Path, needs_arch: bool) -> InputSpec:
    """Every field of an edgekit checkpoint has the type it should, and its tensors' declared
    sizes are within edgekit.limits, before anything is built or allocated from it."""
    from pydantic import ValidationError

    def bad(what: str) -> ModelLoadError:
        return ModelLoadError(f"{path} is a malformed edgekit checkpoint: {what}",
                              hint="save it again with edgekit (or pass --arch with a plain "
                              "state_dict)")

    if not isinstance(obj.get("state_dict"), dict):
        raise bad("no state_dict mapping")
    if needs_arch:
        if "arch" not in obj:
            raise bad("no arch")
        if not isinstance(obj["arch"], str):
            raise bad(f"arch is a {type(obj['arch']).__name__}, not a 'module:factory' string")
    for key, kind in (("arch_kwargs", dict), ("meta", dict), ("surgery", list)):
        if obj.get(key) is not None and not isinstance(obj[key], kind):
            raise bad(f"{key} is a {type(obj[key]).__name__}, not a {kind.__name__}")
    if not all(isinstance(step, dict) for step in obj.get("surgery") or []):
        raise bad("surgery holds an entry that is not a mapping")
    if not isinstance(obj.get("input_spec"), dict):
        raise bad("no input_spec mapping")
    try:
        spec = InputSpec.model_validate(obj["input_spec"])
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "input_spec"
        raise bad(f"input_spec.{where}: {first['msg']}") from None
    check_state_dict(obj["state_dict"], path)
    return spec


def check_state_dict(state_dict: dict[str, Any], path: Path) -> None:
    """Names are strings, values tensors, and the declared sizes within edgekit.limits (a
    stride-0 tensor declaring 200000×200000 holds one value on disk but 160 GB once copied)."""
    import torch

    from edgekit.limits import MAX_MODEL_ELEMENTS, check_model_elements

    total = 0
    for name, value in state_dict.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise ModelLoadError(f"{path}: state_dict entry {name!r} is a "
                                 f"{type(value).__name__}, not a named tensor",
                                 hint="save model.state_dict() again")
        if value.numel() > MAX_MODEL_ELEMENTS:
            check_model_elements(value.numel(), f"{path}: tensor {name} "
                                 f"{'×'.join(map(str, value.shape))}")
        total += value.numel()
    check_model_elements(total, str(path))


def check_finite(model: torch.nn.Module, path: Path | None) -> None:
    """Name the first parameter or buffer holding NaN or infinity: such a model cannot be
    exported, quantized or measured, and the user needs to know which weights are broken."""
    import torch

    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            kind = "NaN" if bool(torch.isnan(tensor).any()) else "infinite"
            raise ModelLoadError(
                f"{path or 'the model'}: {name} holds {kind} values ({bad} of {tensor.numel()})",
                hint="the weights are broken (training diverged or the file was damaged): "
                "retrain or re-save the model")


def fixed_input_size(model: Any) -> tuple[int, int] | None:
    """(H, W) a model only runs at, when it says so: timm's patch embedding with a strict image
    size (ViTs, DeiT, …), torchvision's VisionTransformer's image_size; None otherwise."""
    for module in model.modules() if hasattr(model, "modules") else ():
        size = getattr(module, "img_size", None)
        if getattr(module, "strict_img_size", False) and isinstance(size, tuple | list) \
                and len(size) == 2:
            return int(size[0]), int(size[1])
    size = getattr(model, "image_size", None)
    if type(model).__name__ == "VisionTransformer" and isinstance(size, int):
        return size, size
    return None


def check_input_shape(bundle: ModelBundle) -> None:
    """Run one forward pass on zeros of the spec's shape; a model that rejects it is an input
    error. A forward that needs more than one input, or whose first conv takes another channel
    count than the spec, is named as such."""
    import torch

    where = f"{bundle.source or bundle.name}" + (f" ({bundle.arch})" if bundle.arch else "")
    names = forward_inputs(bundle.model)
    if names is not None and len(names) > 1:
        raise ModelLoadError(
            f"{where}: forward({', '.join(names)}) takes {len(names)} inputs; edgekit runs image "
            "classifiers with one image input (N,C,H,W)",
            hint=f"wrap it in a module whose forward({names[0]}) supplies "
            f"{', '.join(names[1:])} itself (e.g. fixed values) and pass that wrapper as --arch")
    try:
        with torch.no_grad():
            out = bundle.model(torch.zeros(bundle.spec.shape))
    except Exception as exc:  # noqa: BLE001
        conv = first_conv(bundle.model)
        if conv is not None and conv[1] != bundle.spec.channels:
            c, spec = conv[1], bundle.spec
            raise ModelLoadError(
                f"{where}: its first layer {conv[0]} takes {c} channel{'s' if c > 1 else ''} "
                f"but the input spec has {spec.channels} (shape {','.join(map(str, spec.shape))},"
                f" mean {','.join(f'{v:g}' for v in spec.mean)})",
                hint=f"pass --input-shape {spec.shape[0]},{c},{spec.height},{spec.width} and "
                f"the model's own normalisation for {c} channel{'s' if c > 1 else ''}, e.g. "
                + ("--mean 0.5 --std 0.5" if c == 1 else "--mean " + ",".join(["0.5"] * c)
                   + " --std " + ",".join(["0.5"] * c))) from None
        spec, fixed = bundle.spec, fixed_input_size(bundle.model)
        if fixed is not None and fixed != (spec.height, spec.width):
            h, w = fixed
            hint = (f"pass --input-shape {spec.shape[0]},{spec.channels},{h},{w} (images are "
                    "resized and cropped to it)")
            size_kwarg = "img_size" if str(bundle.arch).startswith("timm") else \
                "image_size" if type(bundle.model).__name__ == "VisionTransformer" else None
            if size_kwarg and spec.height == spec.width:
                kwargs = json.dumps({**(bundle.arch_kwargs or {}), size_kwarg: spec.height})
                hint += (f"; a model trained at {spec.height}×{spec.width} is built for that "
                         f"size with --arch-kwargs '{kwargs}'")
            raise ModelLoadError(
                f"{where} rejects input shape {','.join(map(str, spec.shape))}: its height and "
                f"width are fixed at {h}×{w} (batch and channels are not; "
                f"{str(exc).splitlines()[0][:200]})", hint=hint) from None
        raise ModelLoadError(
            f"the model rejects input shape {','.join(map(str, bundle.spec.shape))}: "
            f"{str(exc).splitlines()[0]}",
            hint="pass the shape it was trained for with --input-shape N,C,H,W",
        ) from None
    if not hasattr(out, "shape") or out.ndim != 2:
        raise ModelLoadError(
            f"the model returns {getattr(out, 'shape', type(out).__name__)}, edgekit expects "
            "(batch, classes) logits",
            hint="wrap the model so that forward returns one logits tensor",
        )
