"""Safe model loading and edgekit checkpoints.

Formats, in the order they are recognised:
  * edgekit checkpoint: {format, arch, arch_kwargs, surgery, state_dict, input_spec} saved with
    torch.save and loadable with `weights_only=True` (what `zoo train` and `compress` write);
  * a plain state_dict (or a training checkpoint holding one) plus `--arch module:factory`;
  * a pickled nn.Module, TorchScript or torch.export `.pt2`: these execute code when loaded and
    need `--trust-model`. Without it they are refused before anything is unpickled, and a failed
    safe load is never retried unsafely.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import json
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.errors import ModelLoadError, UnsafeModelError, shown
from edgekit.io.files import atomic_path
from edgekit.spec import InputSpec, describe_provenance, resolve_preprocessing

if TYPE_CHECKING:  # pragma: no cover
    import torch

CHECKPOINT_FORMAT = "edgekit.checkpoint/1"
IMAGENET_SPEC = InputSpec(
    shape=(1, 3, 224, 224), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
)

# The CLI's --mean/--std/--resize/--crop for the command being run (set by
# edgekit.cli.common.model_options around the command; load_model's `preprocessing` wins).
_PREPROCESSING: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "edgekit_preprocessing", default=None)


def current_preprocessing() -> dict[str, Any]:
    return dict(_PREPROCESSING.get() or {})


# Lines already printed by the command being run (None outside the CLI: the API prints nothing).
_ANNOUNCED: contextvars.ContextVar[set[str] | None] = contextvars.ContextVar(
    "edgekit_announced", default=None)


@contextlib.contextmanager
def preprocessing_from_cli(options: dict[str, Any]) -> Iterator[None]:
    token = _PREPROCESSING.set({k: v for k, v in options.items() if v is not None})
    announced = _ANNOUNCED.set(set())
    try:
        yield
    finally:
        _PREPROCESSING.reset(token)
        _ANNOUNCED.reset(announced)


def announce(line: str) -> None:
    """Print `line` once on stderr when a command is running (never under the Python API)."""
    seen = _ANNOUNCED.get()
    if seen is None or line in seen:
        return
    seen.add(line)
    import sys

    sys.stderr.write(line + "\n")


def first_layer_channels(model: Any) -> int | None:
    """The input channels the weights' first convolution takes (None when there is none)."""
    try:
        from torch import nn
    except ImportError:  # pragma: no cover
        return None
    for module in model.modules() if hasattr(model, "modules") else ():
        if isinstance(module, nn.Conv2d):
            return int(module.in_channels)
    return None


def resolve_model_spec(recorded: InputSpec | None, *, what: str, model: Any = None,
                       arch: str | None = None, input_shape: tuple[int, ...] | None = None,
                       preprocessing: dict[str, Any] | None = None, api: bool = False
                       ) -> tuple[InputSpec, dict[str, str]]:
    """edgekit.spec.resolve_preprocessing for a loaded model: the user's preprocessing
    (`preprocessing`, else the CLI's flags) over what the file records; the preset "arch" is
    what the architecture documents. Prints the provenance line under the CLI."""
    given = {k: v for k, v in (preprocessing or current_preprocessing()).items() if v is not None}
    if input_shape is not None:
        given["input_shape"] = tuple(input_shape)
    preset_spec = None
    if given.get("preset") == "arch":
        from edgekit.io.archs import known_preprocessing

        preset_spec = known_preprocessing(arch, model)
        if preset_spec is None:
            raise ModelLoadError(f"edgekit knows no documented preprocessing for "
                                 f"{arch or what}", hint="pass --input-shape, --mean and --std "
                                 "(or name another preset: --preprocessing imagenet|cifar10|"
                                 "fashion-mnist|mnist)")
    spec, provenance = resolve_preprocessing(
        recorded, given, what=what, preset_spec=preset_spec,
        channels=first_layer_channels(model) if model is not None else None, api=api)
    announce(describe_provenance(spec, provenance))
    return spec, provenance


def check_channel_change(spec: InputSpec | None, input_shape: tuple[int, ...],
                         preprocessing: dict[str, Any] | None, what: str) -> None:
    """--input-shape that changes the channel count of a spec with per-channel mean/std (e.g.
    ImageNet's for a one-channel model) needs the user's own mean/std: never averaged silently."""
    from edgekit.spec import channel_change_problem, channels_hint

    given = preprocessing if preprocessing is not None else current_preprocessing()
    if len(input_shape) == 4 and (problem := channel_change_problem(spec, int(input_shape[1]),
                                                                    given)):
        raise ModelLoadError(f"{what}: {problem}", hint=channels_hint(int(input_shape[1])))


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
    width = _classifier_width(model, state_dict, mismatched)
    if width is not None and not missing and not unexpected:
        name, n, has = width
        kw = {**(kwargs or {}), "num_classes": n}
        hint = (f"the weights have {n} classes ({name} is {n} wide, {arch.split(':')[-1]} was "
                f"built with {has}): pass --arch-kwargs '{json.dumps(kw)}'")
    elif unexpected and all(k.startswith("module.") for k in state_dict) and \
            all(k[len("module."):] in own for k in state_dict):
        hint = ("the keys carry a 'module.' prefix (saved from DataParallel/DDP): save "
                "model.module.state_dict() instead")
    elif shared <= len(own) // 2:
        hint = (f"these weights were saved from another architecture than {arch}: pass the --arch "
                "the model was built with (and --arch-kwargs)")
    return ModelLoadError(message, hint=hint)


def _classifier_width(model: Any, state_dict: dict[str, Any], mismatched: list[str]
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


# Structural edits a pass made (e.g. dwsep replacing a conv); replayed on load, by name.
SURGERIES: dict[str, Callable[[Any, dict[str, Any]], None]] = {}


def register_surgery(name: str) -> Callable[[Callable], Callable]:
    def deco(fn: Callable) -> Callable:
        SURGERIES[name] = fn
        return fn

    return deco


@dataclass
class ModelBundle:
    """A model with everything needed to rebuild, preprocess for and export it."""

    model: torch.nn.Module
    spec: InputSpec
    arch: str | None = None
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    surgery: list[dict[str, Any]] = field(default_factory=list)
    source: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    # where each preprocessing field came from ("file", "preset imagenet", "--mean"), as loaded
    provenance: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        if self.meta.get("name"):
            return str(self.meta["name"])
        if self.arch:
            return self.arch.split(":")[-1]
        return self.source.stem if self.source else "model"


def _sniff(path: Path) -> str:
    """'zip-torchscript' | 'zip-export' | 'zip-pickle' | 'legacy-pickle'; errors for the rest."""
    if not path.exists():
        raise ModelLoadError(f"model file {path} does not exist", hint="check the path")
    if path.is_dir():
        raise ModelLoadError(
            f"{path} is a directory, not a model file",
            hint="pass the .pt file itself (for an output folder use `edgekit export OUT/`)",
        )
    if path.stat().st_size == 0:
        raise ModelLoadError(f"model file {path} is empty (0 bytes)", hint="re-save or re-copy it")
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
                bad = zf.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise ModelLoadError(
                f"{path} is a damaged zip archive ({exc})",
                hint="the file is probably truncated: copy or save it again",
            ) from None
        if bad is not None:
            raise ModelLoadError(f"{path} is damaged: member {bad} fails its CRC check",
                                 hint="the file is probably truncated: copy or save it again")
        if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
            return "zip-torchscript"
        if any(n.endswith("archive_format") or "/models/" in n or n.endswith(".json") and
               "serialized_exported_program" in n for n in names):
            return "zip-export"
        return "zip-pickle"
    if head[:1] == b"\x80":
        return "legacy-pickle"
    raise ModelLoadError(
        f"{path} is not a PyTorch file (starts with {head!r})",
        hint="edgekit loads files written by torch.save, torch.jit.save or torch.export.save",
    )


def _resolve_arch(arch: str, trusted: bool) -> Callable[..., Any]:
    """The factory `arch` names. Untrusted (named inside a file): only a listed model factory
    (edgekit.io.archs); trusted (typed by the user): any importable module:callable."""
    if not trusted:
        from edgekit.io.archs import file_factory

        return file_factory(arch)
    module_name, _, attr = arch.partition(":")
    if module_name in ("timm", "timm.models") and attr:
        return _timm(arch)
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


def _timm(arch: str) -> Callable[..., Any]:
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


def _call_factory(factory: Callable[..., Any], arch: str, kwargs: dict[str, Any]):
    try:
        return factory(**kwargs)
    except Exception as exc:  # noqa: BLE001 - bad kwargs surface as many exception types
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ModelLoadError(f"{str(arch)[:100]}(**{shown(kwargs, 200)}) failed: {first[:300]}",
                             hint="check --arch-kwargs against the factory's signature") from None


def build_arch(arch: str, kwargs: dict[str, Any] | None = None, *, trusted: bool = True):
    """Build `arch` with `kwargs`. It is first built on the meta device (nothing allocated) and
    refused when its parameters exceed edgekit.limits; a file's arch is untrusted (see
    edgekit.io.archs: only listed factories, no weights/URL/path kwargs, nothing downloads)."""
    import torch

    from edgekit.limits import check_model_elements

    factory = _resolve_arch(arch, trusted)
    kwargs = dict(kwargs or {})
    if not trusted:
        from edgekit.io.archs import check_file_kwargs, offline_kwargs

        check_file_kwargs(arch, kwargs)
        kwargs = offline_kwargs(factory, kwargs)
    try:
        with torch.device("meta"):
            probe = factory(**kwargs)
    except Exception:  # noqa: BLE001 - the real build below reports it (or works off meta)
        probe = None
    if isinstance(probe, torch.nn.Module):
        check_model_elements(sum(t.numel() for t in probe.state_dict().values()), arch)
    del probe
    model = _call_factory(factory, arch, kwargs)
    if not isinstance(model, torch.nn.Module):
        raise ModelLoadError(f"{arch} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _load_state_dict(model, state_dict: dict[str, Any], arch: str,
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


def load_model(
    path: str | Path,
    *,
    arch: str | None = None,
    arch_kwargs: dict[str, Any] | str | None = None,
    input_shape: tuple[int, ...] | None = None,
    trust_model: bool = False,
    check_forward: bool = True,
    preprocessing: dict[str, Any] | None = None,
    trusted_arch: bool = True,
) -> ModelBundle:
    """Load a model file safely into a ModelBundle (see module docstring for formats).

    `preprocessing` (preset, mean, std, resize, crop, channel_order: the CLI's --preprocessing/
    --mean/--std/--resize/--crop, a recipe's keys) overrides the model's own. A model whose
    input shape or normalisation is recorded nowhere (a state_dict, TorchScript, a pickled
    module) and given neither by flags nor by a named preset is refused with the flags to pass:
    a silent default would make every accuracy wrong (edgekit.spec.resolve_preprocessing).
    `trusted_arch=False`: `arch` comes from a file (a recipe), not the user, and is built as a
    checkpoint's is (only listed factories, edgekit.io.archs)."""
    import torch

    path = Path(path)
    if isinstance(arch_kwargs, str):
        try:
            arch_kwargs = json.loads(arch_kwargs)
        except json.JSONDecodeError as exc:
            raise ModelLoadError(f"--arch-kwargs is not valid JSON ({exc})",
                                 hint='e.g. --arch-kwargs \'{"num_classes": 10}\'') from None
        if not isinstance(arch_kwargs, dict):
            raise ModelLoadError(f"--arch-kwargs must be a JSON object, got "
                                 f"{type(arch_kwargs).__name__}",
                                 hint='e.g. --arch-kwargs \'{"num_classes": 10}\'')
    kind = _sniff(path)
    if kind in ("zip-torchscript", "zip-export") and not trust_model:
        what = "TorchScript" if kind == "zip-torchscript" else "torch.export program (.pt2)"
        raise UnsafeModelError(
            f"{path} is a {what}; loading it runs code stored in the file",
            hint="pass --trust-model if you trust where this file came from",
        )
    spec: InputSpec | None = None
    bundle_arch, kwargs, surgery, meta = arch, dict(arch_kwargs or {}), [], {}
    if kind == "zip-torchscript":
        model = torch.jit.load(str(path), map_location="cpu")
    elif kind == "zip-export":
        model = torch.export.load(str(path)).module()
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=not trust_model)
        except Exception as exc:  # noqa: BLE001
            if trust_model:
                raise ModelLoadError(f"cannot load {path}: {exc}") from None
            if "weights_only" in str(exc) or "Unsupported global" in str(exc):
                raise UnsafeModelError(
                    f"{path} holds pickled Python objects (e.g. a whole nn.Module), which run code "
                    "when loaded",
                    hint="save model.state_dict() and pass --arch, or pass --trust-model if you "
                    "trust this file",
                ) from None
            raise ModelLoadError(f"cannot load {path}: {str(exc).splitlines()[0]}",
                                 hint="the file may be damaged; save it again") from None
        if isinstance(obj, torch.nn.Module):
            model = obj
        elif isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
            spec = _check_checkpoint(obj, path, needs_arch=arch is None)
            if arch is None:
                bundle_arch = obj["arch"]
                kwargs = dict(obj.get("arch_kwargs") or {})
            surgery = list(obj.get("surgery") or [])
            meta = dict(obj.get("meta") or {})
            model = build_arch(bundle_arch, kwargs,
                               trusted=trust_model or (arch is not None and trusted_arch))
            for step in surgery:
                op = step.get("op") if isinstance(step, dict) else None
                if op not in SURGERIES:
                    _import_surgeries(op)
                if op not in SURGERIES:
                    raise ModelLoadError(f"{path} records a structural edit {op!r} this edgekit "
                                         "does not know",
                                         hint="load it with the edgekit version that wrote it")
                SURGERIES[op](model, step)
            fit_to_state_dict(model, obj["state_dict"])
            _load_state_dict(model, obj["state_dict"], bundle_arch, kwargs)
        elif isinstance(obj, dict):
            state_dict = obj
            for key in ("state_dict", "model_state_dict", "model"):
                if isinstance(obj.get(key), dict):
                    state_dict = obj[key]
                    break
            if not all(hasattr(v, "shape") for v in state_dict.values()):
                raise ModelLoadError(f"{path} holds a dict that is not a state_dict",
                                     hint="save model.state_dict() and pass --arch")
            check_state_dict(state_dict, path)
            if arch is None:
                raise ModelLoadError(
                    f"{path} is a plain state_dict: edgekit needs the architecture to build",
                    hint="pass --arch module:factory, e.g. --arch torchvision.models:resnet18",
                )
            model = build_arch(arch, kwargs, trusted=trusted_arch or trust_model)
            _load_state_dict(model, state_dict, arch, kwargs)
        else:
            raise ModelLoadError(f"{path} holds a {type(obj).__name__}, not a model or state_dict")
    if input_shape is not None:
        check_channel_change(spec, input_shape, preprocessing, str(path))
    spec, provenance = resolve_model_spec(spec, what=f"{path}" + (f" ({bundle_arch})" if bundle_arch else ""),
                                          model=model, arch=bundle_arch, input_shape=input_shape,
                                          preprocessing=preprocessing)
    check_finite(model, path)
    model.eval()
    bundle = ModelBundle(model, spec, bundle_arch, kwargs, surgery, path, meta, provenance)
    if check_forward:
        check_input_shape(bundle)
    return bundle


def _check_checkpoint(obj: dict[str, Any], path: Path, needs_arch: bool) -> InputSpec:
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


def save_checkpoint(bundle: ModelBundle, path: str | Path, **meta: Any) -> Path:
    """Write an edgekit checkpoint atomically; it loads back with weights_only=True."""
    import torch

    if bundle.arch is None:
        raise ModelLoadError("this model has no importable architecture to record",
                             hint="load it with --arch module:factory so it can be rebuilt")
    payload = {
        "format": CHECKPOINT_FORMAT,
        "arch": bundle.arch,
        "arch_kwargs": bundle.arch_kwargs,
        "surgery": bundle.surgery,
        "state_dict": {k: v.detach().cpu() for k, v in bundle.model.state_dict().items()},
        "input_spec": bundle.spec.model_dump(mode="json"),
        "meta": {**bundle.meta, **meta},
    }
    path = Path(path)
    # Through a file object: torch.save names the archive inside the zip after a path it is
    # given (here the random temp name), so the same model would get a different sha256 each
    # time; from a file object the name is fixed and equal checkpoints are equal bytes.
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(payload, fh)
    return path


def _import_surgeries(op: str | None = None) -> None:
    """Passes register their surgeries on import, and a surgery is named after its pass, whose
    module is edgekit/passes/<name>.py. A checkpoint names the pass that rebuilds it; its module
    is imported by that name, as a plugin (io sits below passes and does not import them
    statically). Without a name: every pass module that imports."""
    from edgekit.registry import module_names

    names = [op] if op in module_names("edgekit.passes") else module_names("edgekit.passes")
    for name in names:
        try:
            importlib.import_module(f"edgekit.passes.{name}")
        except ImportError:
            continue
