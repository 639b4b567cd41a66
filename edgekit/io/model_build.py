"""Building a model from the architecture a user or a checkpoint names, and fitting saved weights
to it: the factory an `--arch module:factory` (or `timm:NAME`) names, built first on the meta
device and refused over edgekit.limits; a file's arch only from the allowlist (edgekit.io.archs);
layers resized to a pruned state_dict; a state_dict that does not fit, explained (edgekit.io.models
loads the files)."""

from __future__ import annotations

import contextlib
import importlib
import json
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from edgekit.errors import ModelLoadError, shown


def state_dict_mismatch(model: Any, state_dict: dict[str, Any], arch: str,
                        kwargs: dict[str, Any] | None = None) -> ModelLoadError | None:
    """The error for a state_dict that does not fit `model` built from `arch`, or None when it
    fits: how many keys are missing, unexpected and of another shape, a few of each with their
    shapes, and a hint: the classifier width (--arch-kwargs num_classes from the saved weights),
    a `module.` prefix (DataParallel), or another architecture."""
    own = model.state_dict()

    def shape(t: Any) -> str:
        return "×".join(map(str, tuple(getattr(t, "shape", ())))) or "scalar"

    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [k for k, v in state_dict.items()
                  if k in own and hasattr(v, "shape") and v.shape != own[k].shape]
    if not (missing or unexpected or mismatched):
        return None
    parts = []
    if mismatched:
        parts.append(f"{len(mismatched)} of another shape: " + ", ".join(
            f"{k} saved {shape(state_dict[k])}, {arch.split(':')[-1]} has {shape(own[k])}"
            for k in mismatched[:3]))
    if missing:
        parts.append(f"{len(missing)} missing: " + ", ".join(
            f"{k} ({shape(own[k])})" for k in missing[:3]))
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected: " + ", ".join(
            f"{k} ({shape(state_dict[k])})" for k in unexpected[:3]))
    shared = len(own) - len(missing)
    message = (f"the state_dict does not match {arch} ({shared} of its {len(own)} keys found; "
               + "; ".join(parts) + ")")
    hint = "pass the --arch (and --arch-kwargs) the weights were trained with"
    width = classifier_width(model, state_dict, mismatched)
    if width is not None and not missing and not unexpected:
        name, n, has = width
        kw = {**(kwargs or {}), "num_classes": n}
        hint = (f"the weights have {n} classes ({name} is {n} wide, {arch.split(':')[-1]} was "
                f"built with {has}): pass --arch-kwargs '{json.dumps(kw)}'")
    elif unexpected and (prefix := _common_prefix(state_dict)) and \
            len([k for k in state_dict if k[len(prefix):] in own]) * 2 > len(own):
        hint = (f"the keys carry a {prefix!r} prefix ("
                + ("saved from DataParallel/DDP): save model.module.state_dict() instead"
                   if prefix == "module." else "the model was saved inside a wrapper): save "
                   f"the inner model's state_dict, or strip the prefix: "
                   f"{{k.removeprefix({prefix!r}): v for k, v in state_dict.items()}}"))
    elif shared <= len(own) // 2:
        from edgekit.io.archmatch import arch_flags, state_dict_matches

        matches = state_dict_matches(state_dict)
        if matches:
            hint = (f"these weights were saved from {matches[0][0]}, not {arch}: pass "
                    + arch_flags(*matches[0]) + "".join(f" (or {arch_flags(*m)})"
                                                        for m in matches[1:3]))
        else:
            hint = (f"these weights were saved from another architecture than {arch} (no "
                    "torchvision or timm model has their keys and shapes): pass the --arch the "
                    "model was built with (and --arch-kwargs)")
    elif pairs := _closest_pairs(missing, unexpected):
        hint = ("the closest names differ: " + ", ".join(
            f"saved {saved} where {arch.split(':')[-1]} has {wanted}"
            for saved, wanted in pairs[:3])
                + ": rename them, or pass the --arch the model was built with")
    return ModelLoadError(message, hint=hint)


def _common_prefix(state_dict: dict[str, Any]) -> str | None:
    """'name.' when every key starts with it (a wrapper's attribute: module., model., net.)."""
    firsts = {k.split(".", 1)[0] for k in state_dict}
    if len(firsts) != 1 or not all("." in k for k in state_dict):
        return None
    return firsts.pop() + "."


def _closest_pairs(missing: list[str], unexpected: list[str]) -> list[tuple[str, str]]:
    """(saved key, the model's key) for each unexpected key with a close missing one."""
    import difflib

    pairs, left = [], list(missing)
    for key in unexpected[:50]:
        close = difflib.get_close_matches(key, left, n=1, cutoff=0.75)
        if close:
            pairs.append((key, close[0]))
            left.remove(close[0])
    return pairs


def classifier_width(model: Any, state_dict: dict[str, Any], mismatched: list[str]
                      ) -> tuple[str, int, int] | None:
    """(layer, saved width, built width) when every shape mismatch is the output width of the
    model's last Linear (or 1×1 conv) layer: the classifier was built for another class count."""
    from torch import nn

    last = None
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            last = name, module
    if last is None or not mismatched:
        return None
    name, module = last
    prefix = f"{name}." if name else ""
    if not all(k in (prefix + "weight", prefix + "bias") for k in mismatched):
        return None
    saved = state_dict.get(prefix + "weight")
    if saved is None or saved.ndim < 1 or tuple(saved.shape[1:]) != tuple(module.weight.shape[1:]):
        return None
    return name, int(saved.shape[0]), int(module.weight.shape[0])


def resolve_arch(arch: str, trusted: bool) -> Callable[..., Any]:
    """The factory `arch` names. Untrusted (named inside a file): only a listed model factory
    (edgekit.io.archs); trusted (typed by the user): any importable module:callable."""
    if not trusted:
        from edgekit.io.archs import file_factory

        return file_factory(arch)
    module_name, _, attr = arch.partition(":")
    if module_name in ("timm", "timm.models") and attr:
        return timm_factory(arch)
    if not module_name or not attr:
        raise ModelLoadError(f"--arch {arch!r} is not of the form module:factory",
                             hint="e.g. --arch torchvision.models:resnet18")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is the user's to fix
        raise ModelLoadError(f"cannot import {module_name!r} for --arch {arch} ({exc})",
                             hint="check the module path and that its package is installed") from None
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise ModelLoadError(f"{module_name} has no callable {attr!r}",
                             hint="--arch takes module:factory, e.g. torchvision.models:resnet18")
    return factory


def timm_factory(arch: str) -> Callable[..., Any]:
    """timm:NAME, always built with pretrained=False: weights come from the user's file, and
    nothing is ever downloaded."""
    try:
        import timm  # noqa: F401
    except ImportError:
        raise ModelLoadError(f"--arch {arch} needs timm, which is not installed",
                             hint='pip install "edgekit[timm]"') from None
    from edgekit.io.archs import _timm_factory

    factory = _timm_factory(arch)
    if factory is None:
        raise ModelLoadError(f"timm has no model named {arch.partition(':')[2]!r}",
                             hint="see timm.list_models(), e.g. --arch timm:resnet18")
    return factory


def call_factory(factory: Callable[..., Any], arch: str, kwargs: dict[str, Any]):
    try:
        return factory(**kwargs)
    except Exception as exc:  # noqa: BLE001 - bad kwargs surface as many exception types
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ModelLoadError(f"{str(arch)[:100]}(**{shown(kwargs, 200)}) failed: {first[:300]}",
                             hint="check --arch-kwargs against the factory's signature") from None


_META_LOCK = threading.Lock()


@contextlib.contextmanager
def _weights_on_meta() -> Iterator[None]:
    """Every parameter and buffer a module registers is moved to the meta device as it is
    registered (what accelerate's init_empty_weights does), while the other tensors a builder
    makes stay on the CPU with their values: torchvision's RegNets compute their stage widths
    with torch.arange(...).tolist(), which under `with torch.device("meta")` has no data
    ("Cannot copy out of meta tensor")."""
    from torch import nn

    register_parameter = nn.Module.register_parameter
    register_buffer = nn.Module.register_buffer

    def parameter(module: nn.Module, name: str, param: Any) -> None:
        register_parameter(module, name, param)
        if param is not None:
            own = module._parameters[name]
            module._parameters[name] = type(own)(own.to("meta"),
                                                 requires_grad=own.requires_grad)

    def buffer(module: nn.Module, name: str, tensor: Any, persistent: bool = True) -> None:
        register_buffer(module, name, tensor, persistent=persistent)
        if tensor is not None:
            module._buffers[name] = module._buffers[name].to("meta")

    with _META_LOCK:
        nn.Module.register_parameter, nn.Module.register_buffer = parameter, buffer
        try:
            yield
        finally:
            nn.Module.register_parameter = register_parameter
            nn.Module.register_buffer = register_buffer


def build_on_meta(factory: Callable[..., Any], kwargs: dict[str, Any] | None = None) -> Any:
    """factory(**kwargs) with its weights on the meta device: nothing allocated, nothing
    initialised, so its keys, shapes and size are known for the cost of building the modules.
    First under `torch.device("meta")`; a builder that computes its architecture with tensors
    (torchvision's RegNets) is built again with only its weights sent to meta. Raises what the
    factory raises."""
    import torch

    with warnings.catch_warnings(), _skip_meta_init():
        warnings.simplefilter("ignore")
        try:
            with torch.device("meta"):
                return factory(**(kwargs or {}))
        except NotImplementedError:  # "Cannot copy out of meta tensor": values it computes with
            with _weights_on_meta():
                return factory(**(kwargs or {}))


# In-place ops that only set values (the weight initialisers': normal_, trunc_normal_'s
# uniform_/erfinv_/mul_/add_/clamp_ …); on a meta tensor they have nothing to set.
_VALUE_OPS = ("normal_", "uniform_", "zero_", "fill_", "erfinv_", "mul_", "add_", "sub_",
              "div_", "clamp_", "copy_", "exponential_", "bernoulli_", "random_", "log_",
              "exp_", "sqrt_", "neg_")


def _skip_meta_init() -> Any:
    """A torch function mode in which the value-only in-place ops on meta tensors return at
    once: on meta they still run torch's reference decompositions (timm's EfficientNets spent
    60 % of a meta build in `normal_`), for values that do not exist."""
    import torch
    from torch.overrides import TorchFunctionMode

    # the Tensor methods, and torch.nn.init's initialisers (handled whole: a mode does not see
    # the calls made inside the function it handles)
    skip = {getattr(torch.Tensor, name) for name in _VALUE_OPS} | {
        getattr(torch.nn.init, name) for name in dir(torch.nn.init)
        if name.endswith("_") and not name.startswith("_")}

    class SkipMetaInit(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func in skip:
                tensor = args[0] if args else kwargs.get("tensor")
                if isinstance(tensor, torch.Tensor) and tensor.is_meta:
                    return tensor
            return func(*args, **kwargs)

    return SkipMetaInit()


def build_arch(arch: str, kwargs: dict[str, Any] | None = None, *, trusted: bool = True):
    """Build `arch` with `kwargs`. It is first built on the meta device (nothing allocated) and
    refused when its parameters exceed edgekit.limits; a file's arch is untrusted (see
    edgekit.io.archs: only listed factories, no weights/URL/path kwargs, nothing downloads)."""
    import torch

    from edgekit.limits import check_model_elements

    factory = resolve_arch(arch, trusted)
    kwargs = dict(kwargs or {})
    if not trusted:
        from edgekit.io.archs import check_file_kwargs, offline_kwargs

        check_file_kwargs(arch, kwargs)
        kwargs = offline_kwargs(factory, kwargs)
    try:
        probe = build_on_meta(factory, kwargs)
    except Exception:  # noqa: BLE001 - the real build below reports it (or works off meta)
        probe = None
    if isinstance(probe, torch.nn.Module):
        check_model_elements(sum(t.numel() for t in probe.state_dict().values()), arch)
    del probe
    model = call_factory(factory, arch, kwargs)
    if not isinstance(model, torch.nn.Module):
        raise ModelLoadError(f"{arch} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def load_state_dict(model, state_dict: dict[str, Any], arch: str,
                     kwargs: dict[str, Any] | None = None) -> None:
    if (error := state_dict_mismatch(model, state_dict, arch, kwargs)) is not None:
        raise error
    model.load_state_dict(state_dict)


def fit_to_state_dict(model, state_dict: dict[str, Any]) -> None:
    """Resize layers whose saved parameters have other shapes (a pruned model) so that the
    state_dict loads: Conv/Linear/BatchNorm/LSTM/GRU attributes follow the saved tensors."""
    import torch
    from torch import nn

    for mod_name, module in model.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        changed = False
        for pname, tensor in list(module.named_parameters(recurse=False)) + list(
            module.named_buffers(recurse=False)
        ):
            saved = state_dict.get(prefix + pname)
            if saved is None or tensor is None or saved.shape == tensor.shape:
                continue
            new = torch.empty(saved.shape, dtype=tensor.dtype)
            if isinstance(tensor, nn.Parameter):
                setattr(module, pname, nn.Parameter(new, requires_grad=tensor.requires_grad))
            else:
                module._buffers[pname] = new
            changed = True
        if not changed:
            continue
        if isinstance(module, nn.Conv2d):
            depthwise = module.groups == module.in_channels and module.groups > 1
            module.out_channels = module.weight.shape[0]
            module.in_channels = module.weight.shape[1] * (1 if not depthwise else module.out_channels)
            if depthwise:
                module.groups = module.in_channels
                module.in_channels = module.groups
        elif isinstance(module, nn.Linear):
            module.out_features, module.in_features = module.weight.shape
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.num_features = module.weight.shape[0]
        elif isinstance(module, nn.RNNBase):
            gates = {"LSTM": 4, "GRU": 3}.get(module.mode, 1)
            module.hidden_size = module.weight_hh_l0.shape[1]
            module.input_size = module.weight_ih_l0.shape[1]
            if getattr(module, "proj_size", 0):
                module.proj_size = module.weight_hr_l0.shape[0]
            assert module.weight_ih_l0.shape[0] == gates * module.hidden_size
            module._init_flat_weights()
