"""The Python API, for notebooks and training scripts: `edgekit.compress`, `edgekit.export` and
`edgekit.validate` do what the commands of the same names do, with the same typed options, and
return result objects instead of printing. The CLI commands are thin callers of these functions.

    import edgekit
    result = edgekit.compress(model, "out/", input_shape=(1, 1, 28, 28),
                              steps=[("prune", {"ratio": 0.3}), ("quantize", {})],
                              train="fashion-mnist:train", eval="fashion-mnist:test",
                              calib="calibration/fashion-mnist-512.npz")
    report = edgekit.validate("out/", eval="fashion-mnist:test", max_drop=1.0)
    report.passed, report.records

`model` is an in-memory `torch.nn.Module` (with `input_shape` or an InputSpec) or a path, as on
the command line. Steps are `(name, config)` pairs, `{name: config}` mappings (a recipe's form) or
pass Config objects; each config is checked against its pass's own schema, so a typo is an error
naming the key. This module imports torch only when a model is loaded or compressed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.errors import ConfigError, InputError, shown

if TYPE_CHECKING:  # pragma: no cover
    from edgekit.devices import DeviceProfile
    from edgekit.io.models import ModelBundle
    from edgekit.results.validation import ValidationResult
    from edgekit.spec import InputSpec
    from edgekit.targets.base import Artifact
    from edgekit.validate.gate import Budget
    from edgekit.zoo.accel import TrainSettings

StepsLike = Iterable[Any] | Mapping[str, Any]


@dataclass
class CompressResult:
    """What `compress` made: the output folder, the steps run, the report rows (size, MACs,
    top-1 per step) and the manifest's artifacts."""

    output: Path
    steps: list[str]
    rows: list[dict[str, Any]]
    artifacts: list[dict[str, Any]]
    bundle: Any = None  # the compressed ModelBundle (None for an ONNX source)

    @property
    def manifest(self) -> dict[str, Any]:
        from edgekit.io.manifest import Manifest

        return Manifest(self.output).data

    def to_json(self) -> dict[str, Any]:
        return {"steps": self.steps, "rows": self.rows, "artifacts": self.artifacts}


@dataclass
class ExportResult:
    """What `export` made: the artifact (path, format, precision, metrics such as parity) and
    the manifest stage it recorded."""

    artifact: Artifact
    record: dict[str, Any]

    @property
    def path(self) -> Path:
        return Path(self.artifact.path)

    def to_json(self) -> dict[str, Any]:
        return self.record


@dataclass
class ValidateResult:
    """The validation (records, gate per artifact, the decisive one) of `validate`, with the
    device and budget it ran under and where the records were stored."""

    result: ValidationResult
    device: DeviceProfile
    budget: Budget
    store: str | None = None
    stored_ids: list[int] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.result.passed

    @property
    def records(self) -> list[dict[str, Any]]:
        return self.result.records

    @property
    def decisive(self) -> dict[str, Any]:
        return self.result.decisive

    def to_json(self) -> dict[str, Any]:
        return {**self.result.to_json(), "store": self.store, "stored_ids": self.stored_ids}


# ---------------------------------------------------------------- helpers
def normalize_steps(steps: StepsLike | None) -> list[tuple[str, dict[str, Any]]]:
    """Steps in any accepted form as [(name, config dict)], each name known to the registry."""
    from edgekit.config import validate as validate_config
    from edgekit.passes.base import PASSES, PassConfig, get_pass, pass_names

    if steps is None:
        return []
    if isinstance(steps, str | bytes) or not isinstance(steps, Iterable):
        raise ConfigError(f"steps={shown(steps)} is not a list of steps",
                          hint="give a list, e.g. steps=['quantize'] or [('prune', {'ratio': "
                               "0.3}), ('quantize', {})]")
    items: list[Any] = list(steps.items()) if isinstance(steps, Mapping) else list(steps)
    out: list[tuple[str, dict[str, Any]]] = []
    for item in items:
        if isinstance(item, Mapping) and len(item) == 1:
            item = next(iter(item.items()))
        if isinstance(item, PassConfig):
            names = [n for n in pass_names() if PASSES[n].Config is type(item)]
            if not names:
                raise InputError(f"{type(item).__name__} is not the Config of a step",
                                 hint=f"steps are: {', '.join(pass_names())}")
            item = (names[0], item.model_dump(exclude_unset=True))
        if isinstance(item, str):
            item = (item, {})
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
            raise InputError(f"cannot read step {item!r}",
                             hint="give steps as ('prune', {'ratio': 0.3}), {'prune': {...}} "
                                  "or a pass Config object")
        name, cfg = item
        if isinstance(cfg, PassConfig):
            cfg = cfg.model_dump(exclude_unset=True)
        if name not in pass_names():
            import difflib

            from edgekit.passes.base import _UNAVAILABLE

            if name in _UNAVAILABLE:
                raise _UNAVAILABLE[name]
            close = difflib.get_close_matches(name, pass_names(), n=1)
            raise ConfigError(f"unknown step {shown(name)}"
                              + (f"; did you mean {close[0]!r}?" if close else ""),
                              hint=f"steps are: {', '.join(pass_names())}")
        if cfg is not None and not isinstance(cfg, Mapping):
            raise ConfigError(f"the config of step {shown(name)}, {shown(cfg)}, is not a mapping",
                              hint=f"e.g. ({name!r}, {{}}) with the step's keys: "
                              f"{', '.join(get_pass(name).Config.model_fields)}")
        # every key is checked now, before any model is loaded: a misspelt key is named with
        # the closest valid one (edgekit.config.explain)
        validate_config(get_pass(name).Config, dict(cfg or {}), f"{name} step")
        out.append((name, dict(cfg or {})))
    return out


def user_preprocessing(preprocessing: str | Mapping[str, Any] | None = None,
                       **fields: Any) -> dict[str, Any]:
    """The API's preprocessing arguments as the one rule takes them (edgekit.spec.
    resolve_preprocessing): `preprocessing` is a preset name ("imagenet", "cifar10",
    "fashion-mnist", "mnist", "arch") or a mapping of preset/mean/std/resize/crop/channel_order;
    `fields` (mean=, std=, resize=, crop=, channel_order=) override it."""
    given: dict[str, Any] = {}
    if isinstance(preprocessing, str):
        given["preset"] = preprocessing
    elif preprocessing is not None:
        given.update(preprocessing)
    given.update({k: v for k, v in fields.items() if v is not None})
    return {k: v for k, v in given.items() if v is not None}


def as_bundle(model: Any, *, input_shape: tuple[int, ...] | None = None,
              spec: InputSpec | None = None, arch: str | None = None,
              arch_kwargs: str | dict[str, Any] | None = None,
              trust_model: bool = False,
              preprocessing: str | Mapping[str, Any] | None = None) -> ModelBundle:
    """A ModelBundle from a path (loaded as the CLI loads it), a ModelBundle, or an in-memory
    nn.Module (its InputSpec from `spec`, or from `input_shape` with mean/std or a named preset
    in `preprocessing`: never guessed; its architecture recorded as `arch`, or as its class when
    that is importable, so the compressed checkpoint can be rebuilt)."""
    from edgekit.io.models import ModelBundle

    if isinstance(model, ModelBundle):
        return model
    given = user_preprocessing(preprocessing)
    if isinstance(model, (str, Path)):
        from edgekit.io.models import load_model

        return load_model(model, arch=arch, arch_kwargs=arch_kwargs, input_shape=input_shape,
                          trust_model=trust_model, preprocessing=given or None)
    import torch

    if not isinstance(model, torch.nn.Module):
        raise InputError(f"cannot compress a {type(model).__name__}",
                         hint="pass a torch.nn.Module, a ModelBundle or a model file path")
    if spec is None and input_shape is None and not {"preset", "crop"} & set(given):
        raise InputError("an in-memory model needs its input shape and normalisation",
                         hint="pass input_shape=(1, C, H, W), mean=(...), std=(...), or a "
                         "preset: preprocessing='imagenet' (or spec=InputSpec(...))")
    if isinstance(arch_kwargs, str):
        import json

        arch_kwargs = json.loads(arch_kwargs)
    cls = type(model)
    if arch is None and cls.__module__ not in ("__main__", "builtins") and "<" not in cls.__qualname__:
        arch = f"{cls.__module__}:{cls.__qualname__}"
    if arch is None:
        raise InputError(f"{cls.__qualname__} is defined in {cls.__module__}, so the compressed "
                         "checkpoint could not rebuild it",
                         hint="pass arch='module:factory' (and arch_kwargs) naming an importable "
                              "function or class that builds this model")
    from edgekit.io.models import resolve_model_spec

    spec, provenance = resolve_model_spec(spec, what=f"the in-memory {type(model).__name__}",
                                          model=model, arch=arch, input_shape=input_shape,
                                          preprocessing=given or {"preset": None}, api=True)
    bundle = ModelBundle(model.eval(), spec, arch, dict(arch_kwargs or {}),
                         meta={"name": cls.__name__.lower()}, provenance=provenance)
    from edgekit.io.models import check_input_shape

    check_input_shape(bundle)
    return bundle


def _data(value: str | None) -> str | None:
    """A data source as given, or the file shipped with edgekit of that name."""
    if not value:
        return value
    from edgekit.resources import resolve_file

    return resolve_file(value)


# ---------------------------------------------------------------- compress
def compress(model: Any, output: str | Path, *, steps: StepsLike,
             train: str | None = None, eval: str | None = None,  # noqa: A002 - the CLI's name
             calib: str | None = None, eval_limit: int | None = None,
             max_drop: float | None = None, max_drop_rel: float | None = None,
             input_shape: tuple[int, ...] | None = None, spec: InputSpec | None = None,
             arch: str | None = None, arch_kwargs: str | dict[str, Any] | None = None,
             trust_model: bool = False, data_dir: str | None = None,
             overwrite: bool = False,
             preprocessing: str | Mapping[str, Any] | None = None,
             mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
             resize: int | None = None, crop: int | None = None,
             channel_order: str | None = None,
             training: TrainSettings | Mapping[str, Any] | None = None) -> CompressResult:
    """Compress `model` (an nn.Module, a ModelBundle, a PyTorch model file, or an fp32 .onnx
    file for quantize alone) with `steps` in pipeline order (prune, dwsep, distill, quantize)
    into the folder `output`, as `edgekit compress` does. `max_drop` / `max_drop_rel` bound the
    whole chain's top-1 drop against the original, measured on `eval`. The model's
    preprocessing comes from its file (or `spec`), from `input_shape`/`mean`/`std`/`resize`/
    `crop`/`channel_order`, or from a preset named in `preprocessing` ("imagenet", ...); it is
    never guessed (edgekit.preprocessing.resolve_preprocessing). `training` says where distillation
    trains and in what precision ({"device": "cuda", "precision": "bf16"}, a TrainSettings;
    default auto)."""
    from edgekit.passes import PassContext
    from edgekit.pipeline import compress as run_compress
    from edgekit.zoo.accel import train_settings

    given = user_preprocessing(preprocessing, mean=mean, std=std, resize=resize, crop=crop,
                               channel_order=channel_order)
    step_list = normalize_steps(steps)
    if not step_list:
        raise InputError("nothing to do", hint="pass --prune, --target-macs, --dwsep or --int8")
    if calib is None and train and any(name == "quantize" for name, _ in step_list):
        from edgekit.io.models import announce

        calib = train  # a stratified sample of it (the quantize step's calib_size)
        announce(f"calib: none given, so int8 calibrates on a sample of --train {train}")
    ctx = PassContext(out_dir=Path(output), train_source=_data(train), eval_source=_data(eval),
                      calib_source=_data(calib), data_dir=data_dir, eval_limit=eval_limit,
                      max_drop=max_drop, max_drop_rel=max_drop_rel,
                      train=train_settings(training))
    from edgekit.chain_budget import default_budget

    ctx.max_drop, ctx.max_drop_rel = default_budget(max_drop, max_drop_rel, step_list, eval)
    created = not Path(output).exists()
    try:
        if isinstance(model, (str, Path)) and Path(model).suffix == ".onnx":
            from edgekit.pipeline import compress_onnx

            result = compress_onnx(Path(model), step_list, ctx, input_shape=input_shape,
                                   overwrite=overwrite, preprocessing=given or None)
        else:
            from edgekit.io.outputs import check_output_folder

            check_output_folder(output)  # before the model is even loaded
            bundle = as_bundle(model, input_shape=input_shape, spec=spec, arch=arch,
                               arch_kwargs=arch_kwargs, trust_model=trust_model,
                               preprocessing=given)
            result = run_compress(bundle, step_list, ctx, overwrite=overwrite)
    except InputError:
        # Bad input found only mid-run (an image that fails to decode while training): the
        # folder this call made holds nothing whole, so it goes; an existing one is left as is.
        if created and Path(output).is_dir():
            import shutil

            shutil.rmtree(output, ignore_errors=True)
        raise
    return CompressResult(Path(output), [s for s, _ in step_list], result["rows"],
                          result["artifacts"], result.get("bundle"))


# ---------------------------------------------------------------- export
def recorded_calibration(source: Any) -> str | None:
    """The calibration set an output folder's compress recorded (its --calib, else the --train
    it defaulted from), for an int8 export of that folder; None when it records none."""
    if not isinstance(source, (str, Path)) or not Path(source).is_dir():
        return None
    from edgekit.io.manifest import MANIFEST_NAME, Manifest

    if not (Path(source) / MANIFEST_NAME).is_file():
        return None
    stage = Manifest(Path(source)).stage("compress") or {}
    data = (stage.get("config") or {}).get("data") or {}
    calib = data.get("calib") or data.get("train")
    if calib:
        from edgekit.io.models import announce

        announce(f"calib: none given, so int8 calibrates on {calib} (recorded by "
                 f"{Path(source).name}'s compress)")
    return calib


def recorded_calib_size(folder: Any) -> int:
    """The calibration samples the folder's compress took (its quantize step's calib_size),
    else DEFAULT_MAX_SAMPLES."""
    from edgekit.io.manifest import Manifest
    from edgekit.quant.calibration import DEFAULT_MAX_SAMPLES

    stage = Manifest(Path(folder)).stage("compress") or {}
    for name, config in (stage.get("config") or {}).get("steps") or []:
        if name == "quantize" and isinstance(config, dict) and \
                isinstance(config.get("calib_size"), int) and config["calib_size"] > 0:
            return min(config["calib_size"], DEFAULT_MAX_SAMPLES)
    return DEFAULT_MAX_SAMPLES


def export(source: Any, output: str | Path | None = None, *, target: str = "onnx",
           precision: str = "fp32", parity_data: str | None = None, calib: str | None = None,
           input_shape: tuple[int, ...] | None = None, spec: InputSpec | None = None,
           arch: str | None = None, arch_kwargs: str | dict[str, Any] | None = None,
           trust_model: bool = False, data_dir: str | None = None,
           preprocessing: str | Mapping[str, Any] | None = None,
           mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
           resize: int | None = None, crop: int | None = None,
           channel_order: str | None = None, **options: Any) -> ExportResult:
    """Export `source` (an nn.Module, a ModelBundle, a model file or an output folder) to
    `target` (onnx | openvino | tensorrt) at `precision` into `output` (default: `source` when
    it is an output folder), checking parity on `parity_data`, as `edgekit export` does.
    `options` are the target's own typed options (workspace_mb, dla, ...)."""
    from edgekit.pipeline import export_artifact

    if calib is None and precision == "int8":
        calib = recorded_calibration(source)
        from edgekit.targets.base import get_target

        if calib and options.get("calib_size") is None and \
                "calib_size" in get_target(target).Options.model_fields:
            # the recorded set is the user's --train, maybe 60,000 images: a sample of it, as
            # compress took (its --calib-size, else at most DEFAULT_MAX_SAMPLES)
            options["calib_size"] = recorded_calib_size(source)
    extra = {k: v for k, v in {"calib": _data(calib), **options}.items() if v is not None}
    given = user_preprocessing(preprocessing, mean=mean, std=std, resize=resize, crop=crop,
                               channel_order=channel_order)
    if not isinstance(source, (str, Path)):
        source = as_bundle(source, input_shape=input_shape, spec=spec, arch=arch,
                           arch_kwargs=arch_kwargs, preprocessing=given)
    artifact, record = export_artifact(
        source, target, output, precision=precision, parity_source=_data(parity_data),
        data_dir=data_dir,
        model_options={"arch": arch, "arch_kwargs": arch_kwargs, "input_shape": input_shape,
                       "trust_model": trust_model, "preprocessing": given or None}, **extra)
    return ExportResult(artifact, record)


# ---------------------------------------------------------------- validate
def check_store(store_path: str | Path, target: str | Path, eval_source: str,
                data_dir: str | None) -> None:
    """Refuse a results store that would overwrite an input (an artifact, the reference, the
    eval data) or that cannot be opened, before anything is measured."""
    from edgekit.data.paths import source_paths
    from edgekit.io.artifacts import find_reference, list_artifacts
    from edgekit.io.outputs import check_outputs
    from edgekit.results.store import open_store

    check_outputs({"--store": [str(store_path), Path(store_path).with_suffix(".jsonl")]},
                  {"an artifact": [a["path"] for a in list_artifacts(target)],
                   "the reference": find_reference(target),
                   "--eval data": source_paths(eval_source, data_dir)})
    open_store(store_path).close()


def validate(target: str | Path, *, eval: str | None,  # noqa: A002 - the CLI's name
             device: str | Path | DeviceProfile = "local-cpu",
             budget: Budget | Mapping[str, Any] | None = None, max_drop: float | None = None,
             max_drop_rel: float | None = None, min_agreement: float | None = None,
             min_cosine: float | None = None, min_speedup: float | None = None,
             artifact: str | None = None, batches: list[int] | None = None,
             limit: int | None = None, threads: int | None = None,
             store: str | Path | None = None, rerun: bool = False,
             data_dir: str | None = None,
             preprocessing: Mapping[str, Any] | None = None,
             batch: int | list[int] | None = None) -> ValidateResult:
    """Validate every artifact of `target` (an output folder) on `device` (a profile name, YAML
    path or DeviceProfile), as `edgekit validate` does: latency with one protocol, top-1 on the
    runtime, speed-up against the fp32 original, the gate. A failed gate is `result.passed ==
    False`, not an exception; bad input raises an EdgekitError. `preprocessing` (mean, std,
    resize, crop, channel_order) may repeat what the artifacts record, never differ from it
    (edgekit.io.artifacts.check_preprocessing). `batch` is `batches` by its natural name (one
    batch size or a list)."""
    from edgekit.config import validate as validate_config

    if batch is not None:
        if batches is not None:
            raise InputError("validate got both batch= and batches=",
                             hint="pass one: batches=[1, 8] (batch=8 means batches=[8])")
        batches = [batch] if isinstance(batch, int) else list(batch)
    from edgekit.devices import DeviceProfile, load_profile
    from edgekit.validate.gate import Budget
    from edgekit.validate.validator import save
    from edgekit.validate.validator import validate as run_validation

    if not eval:
        raise InputError("validate needs labelled eval data for the accuracy gate",
                         hint="pass --eval SOURCE, e.g. --eval fashion-mnist:test")
    from edgekit.io.artifacts import check_preprocessing

    check_preprocessing(target, preprocessing)
    profile = device if isinstance(device, DeviceProfile) else load_profile(device)
    if threads:
        profile = profile.model_copy(update={"threads": threads})
    if not isinstance(budget, Budget):
        limits = {"max_drop": max_drop, "max_drop_rel": max_drop_rel,
                  "min_agreement": min_agreement, "min_cosine": min_cosine,
                  "min_speedup": min_speedup}
        budget = validate_config(Budget, {**limits, **dict(budget or {})}, "budget")
    if store is not None and not isinstance(store, str | Path):
        from edgekit.errors import ConfigError, shown

        raise ConfigError(f"store={shown(store)} is not a file path",
                          hint="pass store='results.db' (a str or pathlib.Path), or leave it out")
    store_path = str(store) if store else None
    if store_path:  # refuse a bad store before minutes of measuring
        check_store(store_path, target, eval, data_dir)
    result = run_validation(target, profile, eval_source=eval, budget=budget, batches=batches,
                            data_dir=data_dir, limit=limit, artifact=artifact, rerun=rerun)
    stored = save(result, store_path) if store_path else []
    return ValidateResult(result, profile, budget, store_path, stored)


__all__ = ["CompressResult", "ExportResult", "ValidateResult", "as_bundle", "compress", "export",
           "normalize_steps", "validate"]
