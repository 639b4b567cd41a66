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

from edgekit.errors import MissingArchError, ModelLoadError, UnsafeModelError
from edgekit.events import emit
from edgekit.io.files import atomic_path
from edgekit.io.model_build import build_arch, fit_to_state_dict, load_state_dict
from edgekit.io.model_checks import (
    check_checkpoint,
    check_finite,
    check_input_shape,
    check_state_dict,
)
from edgekit.preprocessing import Preprocessing, describe_provenance, resolve_preprocessing
from edgekit.spec import InputSpec

if TYPE_CHECKING:  # pragma: no cover
    import torch

CHECKPOINT_FORMAT = "edgekit.checkpoint/1"
IMAGENET_SPEC = InputSpec(
    shape=(1, 3, 224, 224), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
)

# The CLI's --mean/--std/--resize/--crop for the command being run (set by
# edgekit.cli.common.model_options around the command; load_model's `preprocessing` wins).
_PREPROCESSING: contextvars.ContextVar[Preprocessing | None] = contextvars.ContextVar(
    "edgekit_preprocessing", default=None)


def current_preprocessing() -> Preprocessing:
    return dict(_PREPROCESSING.get() or {})


# Lines already printed by the command being run (None outside the CLI: the API prints nothing).
_ANNOUNCED: contextvars.ContextVar[set[str] | None] = contextvars.ContextVar(
    "edgekit_announced", default=None)


@contextlib.contextmanager
def preprocessing_from_cli(options: Preprocessing) -> Iterator[None]:
    token = _PREPROCESSING.set({k: v for k, v in options.items() if v is not None})
    announced = _ANNOUNCED.set(set())
    try:
        yield
    finally:
        _PREPROCESSING.reset(token)
        _ANNOUNCED.reset(announced)


def announce(line: str) -> None:
    """Say `line` (edgekit.events) once while a command is running; never under the Python API,
    which resolves preprocessing and calibration sets without a word."""
    seen = _ANNOUNCED.get()
    if seen is None or line in seen:
        return
    seen.add(line)
    emit(line)


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
                       preprocessing: Preprocessing | None = None, api: bool = False
                       ) -> tuple[InputSpec, dict[str, str]]:
    """edgekit.preprocessing.resolve_preprocessing for a loaded model: the user's preprocessing
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
                         preprocessing: Preprocessing | None, what: str) -> None:
    """--input-shape that changes the channel count of a spec with per-channel mean/std (e.g.
    ImageNet's for a one-channel model) needs the user's own mean/std: never averaged silently."""
    from edgekit.spec import channel_change_problem, channels_hint

    given = preprocessing if preprocessing is not None else current_preprocessing()
    if len(input_shape) == 4 and (problem := channel_change_problem(spec, int(input_shape[1]),
                                                                    given)):
        raise ModelLoadError(f"{what}: {problem}", hint=channels_hint(int(input_shape[1])))


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
    if path.suffix.lower() == ".onnx" or head[:1] == b"\x08":  # ModelProto's ir_version field
        raise ModelLoadError(
            f"{path} is an ONNX model; this needs the PyTorch model it was exported from "
            "(a recipe's model, inspect, the torch passes: prune, dwsep, distill)",
            hint=f"pass the PyTorch file (.pt) instead; an ONNX model goes straight to "
            f"`edgekit compress {path} --int8`, `edgekit validate` and `edgekit bench`")
    raise ModelLoadError(
        f"{path} is not a PyTorch file (starts with {head!r})",
        hint="edgekit loads files written by torch.save, torch.jit.save or torch.export.save",
    )


def load_model(
    path: str | Path,
    *,
    arch: str | None = None,
    arch_kwargs: dict[str, Any] | str | None = None,
    input_shape: tuple[int, ...] | None = None,
    trust_model: bool = False,
    check_forward: bool = True,
    preprocessing: Preprocessing | None = None,
    trusted_arch: bool = True,
) -> ModelBundle:
    """Load a model file safely into a ModelBundle (see module docstring for formats).

    `preprocessing` (preset, mean, std, resize, crop, channel_order: the CLI's --preprocessing/
    --mean/--std/--resize/--crop, a recipe's keys) overrides the model's own. A model whose
    input shape or normalisation is recorded nowhere (a state_dict, TorchScript, a pickled
    module) and given neither by flags nor by a named preset is refused with the flags to pass:
    a silent default would make every accuracy wrong (edgekit.preprocessing.resolve_preprocessing).
    `trusted_arch=False`: `arch` comes from a file (a recipe), not the user, and is built as a
    checkpoint's is (only listed factories, edgekit.io.archs)."""
    path = Path(path)
    kwargs = _arch_kwargs(arch_kwargs)
    kind = _sniff(path)
    if kind in ("zip-torchscript", "zip-export") and not trust_model:
        what = "TorchScript" if kind == "zip-torchscript" else "torch.export program (.pt2)"
        raise UnsafeModelError(
            f"{path} is a {what}; loading it runs code stored in the file",
            hint="pass --trust-model if you trust where this file came from",
        )
    if kind in ("zip-torchscript", "zip-export"):
        bundle = _code_model(path, kind, arch, kwargs)
    else:
        bundle = _from_pickle(_torch_load(path, trust_model), path, arch, kwargs,
                              trust_model=trust_model, trusted_arch=trusted_arch)
    if input_shape is not None:
        check_channel_change(bundle.spec, input_shape, preprocessing, str(path))
    bundle.spec, bundle.provenance = resolve_model_spec(
        bundle.spec, what=f"{path}" + (f" ({bundle.arch})" if bundle.arch else ""),
        model=bundle.model, arch=bundle.arch, input_shape=input_shape,
        preprocessing=preprocessing)
    check_finite(bundle.model, path)
    bundle.model.eval()
    if check_forward:
        check_input_shape(bundle)
    return bundle


def _arch_kwargs(arch_kwargs: dict[str, Any] | str | None) -> dict[str, Any]:
    """--arch-kwargs as a mapping (given as JSON text on the command line)."""
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
    return dict(arch_kwargs or {})


def _code_model(path: Path, kind: str, arch: str | None, kwargs: dict[str, Any]) -> ModelBundle:
    """A TorchScript or torch.export file (already trusted by the user): the file is the model,
    and records no input spec."""
    import torch

    if kind == "zip-torchscript":
        model = torch.jit.load(str(path), map_location="cpu")
    else:
        model = torch.export.load(str(path)).module()
    return ModelBundle(model, None, arch, kwargs, [], path, {})


def _torch_load(path: Path, trust_model: bool) -> Any:
    """torch.load with weights_only unless the user trusts the file; a pickle that needs more is
    refused, never retried unsafely."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_model)
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


def _from_pickle(obj: Any, path: Path, arch: str | None, kwargs: dict[str, Any], *,
                 trust_model: bool, trusted_arch: bool) -> ModelBundle:
    """What torch.load returned: a whole module, an edgekit checkpoint, or a state_dict (alone
    or inside a training checkpoint) built with `arch`. The spec is the checkpoint's or None."""
    import torch

    if isinstance(obj, torch.nn.Module):
        return ModelBundle(obj, None, arch, kwargs, [], path, {})
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        # a checkpoint's own arch is untrusted unless the user trusts the file; a given arch
        # is as trusted as the caller says
        return _from_checkpoint(obj, path, arch, kwargs,
                                trusted=trust_model or (arch is not None and trusted_arch))
    if not isinstance(obj, dict):
        raise ModelLoadError(f"{path} holds a {type(obj).__name__}, not a model or state_dict")
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
        from edgekit.io.archmatch import arch_hint, state_dict_matches

        matches = state_dict_matches(state_dict)  # only on this error path; cached index
        exc = MissingArchError(f"{path} is a plain state_dict: edgekit needs the architecture "
                               "to build", hint=arch_hint(matches))
        exc.arch_matches = matches  # type: ignore[attr-defined]
        raise exc
    model = build_arch(arch, kwargs, trusted=trusted_arch or trust_model)
    load_state_dict(model, state_dict, arch, kwargs)
    return ModelBundle(model, None, arch, kwargs, [], path, {})


def _from_checkpoint(obj: dict[str, Any], path: Path, arch: str | None, kwargs: dict[str, Any],
                     *, trusted: bool) -> ModelBundle:
    """An edgekit checkpoint: its arch (unless `arch` overrides it), the structural edits its
    passes made replayed by name, then its weights."""
    spec = check_checkpoint(obj, path, needs_arch=arch is None)
    if arch is None:
        arch, kwargs = obj["arch"], dict(obj.get("arch_kwargs") or {})
    surgery = list(obj.get("surgery") or [])
    model = build_arch(arch, kwargs, trusted=trusted)
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
    load_state_dict(model, obj["state_dict"], arch, kwargs)
    return ModelBundle(model, spec, arch, kwargs, surgery, path, dict(obj.get("meta") or {}))


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
