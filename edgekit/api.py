"""The Python API, for notebooks and training scripts: `edgekit.compress`, `edgekit.export`,
`edgekit.validate` and `edgekit.optimize` do what the commands of the same names do, with the same typed options, and
return result objects instead of printing. The CLI commands are thin callers of these functions.

    import edgekit
    from edgekit import DataSources
    result = edgekit.compress(model, "out/", model_input={"input_shape": (1, 1, 28, 28)},
                              steps=[("prune", {"ratio": 0.3}), ("quantize", {})],
                              data=DataSources(train="fashion-mnist:train",
                                               eval="fashion-mnist:test",
                                               calib="calibration/fashion-mnist-512.npz"))
    report = edgekit.validate("out/", data="fashion-mnist:test", budget={"max_drop": 1.0})
    report.passed, report.records

Long option lists are grouped into typed objects, each also accepted as a mapping of its keys:
`data=DataSources(...)` (train / eval / calib sources, data_dir, eval_limit), `budget=` (a
Budget), `model_input=ModelInput(...)` (input shape, preprocessing, arch, trust), `settings=
ValidateSettings(...)`. A misspelt argument, or a wrong-typed one, is a ConfigError naming it and
what it accepts (an argument that moved into a group says where it went).

`model` is an in-memory `torch.nn.Module` (with its input shape or an InputSpec) or a path, as on
the command line. Steps are `(name, config)` pairs, `{name: config}` mappings (a recipe's form) or
pass Config objects; each config is checked against its pass's own schema, so a typo is an error
naming the key. This module imports torch only when a model is loaded or compressed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.api_args import (
    ModelInput,
    ValidateSettings,
    budget_arg,
    checked,
    flag_arg,
    group_arg,
    path_arg,
    text_arg,
    user_preprocessing,
)
from edgekit.data.given import DataSources
from edgekit.errors import ConfigError, InputError, shown
from edgekit.results.record import ResultRecord

if TYPE_CHECKING:  # pragma: no cover
    from edgekit.devices import DeviceProfile
    from edgekit.io.models import ModelBundle
    from edgekit.results.validation import Decisive, ValidationResult
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
    record: dict[str, Any]  # the manifest stage it recorded

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
    def records(self) -> list[ResultRecord]:
        return self.result.records

    @property
    def decisive(self) -> Decisive:
        return self.result.decisive

    def to_json(self) -> dict[str, Any]:
        return {**self.result.to_json(), "store": self.store, "stored_ids": self.stored_ids}


# ---------------------------------------------------------------- helpers
def normalize_steps(steps: StepsLike | None) -> list[tuple[str, dict[str, Any]]]:
    """Steps in any accepted form as [(name, config dict)], each name known to the registry."""
    from edgekit.config import parse_as
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
        parse_as(get_pass(name).Config, dict(cfg or {}), f"{name} step")
        out.append((name, dict(cfg or {})))
    return out


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


# ---------------------------------------------------------------- compress
@checked
def compress(model: Any, output: str | Path, *, steps: StepsLike,
             data: DataSources | Mapping[str, Any] | None = None,
             budget: Budget | Mapping[str, float] | None = None,
             model_input: ModelInput | Mapping[str, Any] | None = None,
             overwrite: bool = False,
             training: TrainSettings | Mapping[str, Any] | None = None) -> CompressResult:
    """Compress `model` (an nn.Module, a ModelBundle, a PyTorch model file, or an fp32 .onnx
    file for quantize alone) with `steps` in pipeline order (prune, dwsep, distill, quantize)
    into the folder `output`, as `edgekit compress` does.

    data: DataSources(train=, eval=, calib=, data_dir=, eval_limit=) (or a mapping of them):
        training data, labelled eval data for top-1, the int8 calibration set (default: a
        sample of train).
    budget: {"max_drop": POINTS, "max_drop_rel": FRACTION} (a Budget): the whole chain's top-1
        drop against the original, measured on data.eval.
    model_input: ModelInput(input_shape=, spec=, arch=, arch_kwargs=, trust_model=,
        preprocessing=) (or a mapping): how to read the model; its preprocessing comes from its
        file, its spec, or a preset / mean / std in `preprocessing`, never guessed.
    overwrite: replace what other settings left in `output`.
    training: where distillation trains and in what precision ({"device": "cuda",
        "precision": "bf16"}, a TrainSettings; default auto).

    A misspelt or wrong-typed argument is a ConfigError naming it."""
    from edgekit.data.given import data_sources
    from edgekit.io.models import announce
    from edgekit.passes import PassContext
    from edgekit.pipeline import compress as run_compress
    from edgekit.zoo.accel import TrainSettings, train_settings

    out = path_arg("output", output)
    sources = data_sources(data)
    limits = budget_arg(budget, only=("max_drop", "max_drop_rel"))
    how = group_arg("model_input", model_input, ModelInput)
    overwrite = flag_arg("overwrite", overwrite)
    settings = train_settings(group_arg("training", training, TrainSettings))
    given = how.given()
    step_list = normalize_steps(steps)
    if not step_list:
        raise InputError("nothing to do", hint="pass --prune, --target-macs, --dwsep or --int8")
    if sources.calib is None and sources.train and any(n == "quantize" for n, _ in step_list):
        sources = sources.model_copy(update={"calib": sources.train})  # a stratified sample
        announce(f"calib: none given, so int8 calibrates on a sample of --train {sources.train}")
    from edgekit.chain_budget import default_budget

    max_drop, max_drop_rel = default_budget(limits.max_drop, limits.max_drop_rel, step_list,
                                            sources.eval)
    ctx = PassContext(out_dir=out, data=sources.resolved(), max_drop=max_drop,
                      max_drop_rel=max_drop_rel, train=settings)
    created = not out.exists()
    try:
        if isinstance(model, (str, Path)) and Path(model).suffix == ".onnx":
            from edgekit.pipeline import compress_onnx

            result = compress_onnx(Path(model), step_list, ctx, input_shape=how.input_shape,
                                   overwrite=overwrite, preprocessing=given or None)
        else:
            from edgekit.io.outputs import check_output_folder

            check_output_folder(out)  # before the model is even loaded
            bundle = as_bundle(model, input_shape=how.input_shape, spec=how.spec,
                               arch=how.arch, arch_kwargs=how.arch_kwargs,
                               trust_model=how.trust_model, preprocessing=given)
            result = run_compress(bundle, step_list, ctx, overwrite=overwrite)
    except InputError:
        # Bad input found only mid-run (an image that fails to decode while training): the
        # folder this call made holds nothing whole, so it goes; an existing one is left as is.
        if created and out.is_dir():
            import shutil

            shutil.rmtree(out, ignore_errors=True)
        raise
    return CompressResult(out, [s for s, _ in step_list], result["rows"],
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


@checked
def export(source: Any, output: str | Path | None = None, *, target: str = "onnx",
           precision: str = "fp32",
           data: DataSources | Mapping[str, Any] | None = None,
           model_input: ModelInput | Mapping[str, Any] | None = None,
           options: Mapping[str, Any] | None = None) -> ExportResult:
    """Export `source` (an nn.Module, a ModelBundle, a model file or an output folder) to
    `target` (onnx | openvino | tensorrt) at `precision` (fp32 | fp16 | int8) into `output`
    (default: `source` when it is an output folder), as `edgekit export` does.

    data: DataSources(eval=, calib=, data_dir=) (or a mapping): the parity check's data
        (default fashion-mnist:test if installed) and the int8 calibration set (default: what
        the folder's compress recorded).
    model_input: ModelInput(input_shape=, spec=, arch=, arch_kwargs=, trust_model=,
        preprocessing=) (or a mapping): how to read the model, as for compress.
    options: the target's own typed options ({"workspace_mb": 1024, "dla": 0, "opset": 17,
        "min_agreement": 0.95}).

    A misspelt or wrong-typed argument is a ConfigError naming it."""
    from edgekit.data.given import data_sources
    from edgekit.pipeline import export_artifact

    out = path_arg("output", output, optional=True)
    target = text_arg("target", target, "a target name (onnx | openvino | tensorrt)")
    precision = text_arg("precision", precision, "a precision (fp32 | fp16 | int8)")
    sources = data_sources(data)
    how = group_arg("model_input", model_input, ModelInput)
    if options is not None and not isinstance(options, Mapping):
        raise ConfigError(f"options={shown(options)} is not a mapping",
                          hint="pass the target's options by name, e.g. options={'opset': 17}")
    if isinstance(source, os.PathLike):
        source = Path(source)
    calib = sources.calib
    if calib is None and precision == "int8":
        calib = recorded_calibration(source)
    resolved = sources.model_copy(update={"calib": calib}).resolved()
    extra = {k: v for k, v in {"calib": resolved.calib, **(options or {})}.items()
             if v is not None}
    given = how.given()
    if not isinstance(source, (str, Path)):
        source = as_bundle(source, input_shape=how.input_shape, spec=how.spec, arch=how.arch,
                           arch_kwargs=how.arch_kwargs, preprocessing=given)
    artifact, record = export_artifact(
        source, target, out, precision=precision, parity_source=resolved.eval,
        data_dir=resolved.data_dir,
        model_options={"arch": how.arch, "arch_kwargs": how.arch_kwargs,
                       "input_shape": how.input_shape, "trust_model": how.trust_model,
                       "preprocessing": given or None}, **extra)
    return ExportResult(artifact, record)


# ---------------------------------------------------------------- validate
def check_store(store_path: str | Path, target: str | Path, data: DataSources) -> None:
    """Refuse a results store that would overwrite an input (an artifact, the reference, the
    eval data) or that cannot be opened, before anything is measured."""
    from edgekit.data.paths import source_paths
    from edgekit.io.artifacts import find_reference, list_artifacts
    from edgekit.io.outputs import check_outputs
    from edgekit.results.store import open_store

    check_outputs({"--store": [str(store_path), Path(store_path).with_suffix(".jsonl")]},
                  {"an artifact": [a["path"] for a in list_artifacts(target)],
                   "the reference": find_reference(target),
                   "--eval data": source_paths(data.eval, data.data_dir)})
    open_store(store_path).close()


@checked
def validate(target: str | Path, *,
             data: DataSources | Mapping[str, Any] | str | None = None,
             device: str | Path | DeviceProfile = "local-cpu",
             budget: Budget | Mapping[str, float] | None = None,
             artifact: str | None = None,
             settings: ValidateSettings | Mapping[str, Any] | None = None,
             store: str | Path | None = None) -> ValidateResult:
    """Validate every artifact of `target` (an output folder) on `device` (a profile name, YAML
    path or DeviceProfile), as `edgekit validate` does: latency with one protocol, top-1 on the
    runtime, speed-up against the fp32 original, the gate.

    data: the labelled eval data: a source ("fashion-mnist:test") or DataSources(eval=,
        eval_limit=, data_dir=, preprocessing=); `preprocessing` (mean, std, resize, crop,
        channel_order) may repeat what the artifacts record, never differ from it.
    budget: {"max_drop": POINTS, "max_drop_rel": ..., "min_agreement": ..., "min_cosine": ...,
        "max_abs_diff": ..., "min_speedup": ...} (a Budget).
    artifact: the artifact whose gate decides (default: the fastest within the budget).
    settings: ValidateSettings(batches=, threads=, rerun=) (or a mapping).
    store: a results store (SQLite) the records are appended to.

    A failed gate is `result.passed == False`, not an exception; bad input (a misspelt or
    wrong-typed argument included) raises an EdgekitError."""
    from edgekit.data.given import data_sources
    from edgekit.devices import DeviceProfile, load_profile
    from edgekit.executors.base import ValidationJob
    from edgekit.io.artifacts import check_preprocessing
    from edgekit.validate.validator import save
    from edgekit.validate.validator import validate as run_validation

    folder = path_arg("target", target)
    sources = data_sources({"eval": data} if isinstance(data, str | os.PathLike) else data)
    limits = budget_arg(budget)
    artifact = text_arg("artifact", artifact, "an artifact's file name or stage")
    how = group_arg("settings", settings, ValidateSettings)
    store_path = path_arg("store", store, optional=True)
    if not sources.eval:
        raise InputError("validate needs labelled eval data for the accuracy gate",
                         hint="pass data='fashion-mnist:test' (--eval SOURCE on the command "
                              "line)")
    check_preprocessing(folder, sources.preprocessing)
    profile = device if isinstance(device, DeviceProfile) else load_profile(device)
    if how.threads:
        profile = profile.model_copy(update={"threads": how.threads})
    new_store = store_path is not None and not store_path.exists()
    if store_path:  # refuse a bad store before minutes of measuring
        check_store(store_path, folder, sources)
    job = ValidationJob(target=folder, device=profile, budget=limits,
                        batches=how.batches, artifact=artifact, rerun=how.rerun, data=sources)
    try:
        result = run_validation(job)
    except BaseException:
        if new_store:  # the store this call opened holds nothing: it goes, as it came
            for path in (store_path, store_path.with_suffix(".jsonl")):
                path.unlink(missing_ok=True)
        raise
    stored = save(result, str(store_path)) if store_path else []
    return ValidateResult(result, profile, limits, str(store_path) if store_path else None,
                          stored)


__all__ = ["CompressResult", "DataSources", "ExportResult", "ModelInput", "ValidateResult",
           "ValidateSettings", "as_bundle", "compress", "export", "normalize_steps", "validate"]
