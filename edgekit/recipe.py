"""The recipe schema (recipes/*.yaml): a whole pipeline in one versioned file users copy and edit.

    recipe_version: 1
    name: cnn-gru-fashion-mnist
    model: {zoo: cnn_gru}                 # or {path: model.pt, arch: ...} or {arch: ..., train: ...}
    input: {shape: [1, 1, 28, 28]}        # optional overrides of the model's InputSpec
    data: {train: fashion-mnist:train, calib: calibration/fashion-mnist-512.npz,
           eval: fashion-mnist:test}
    steps:                                # in order; each one `name: {config}`
      - prune: {ratio: 0.3}
      - quantize: {calib_size: 256}
    exports: [{target: openvino, precision: int8}]
    devices: [local-cpu]                  # or {profile: jetson-orin-nano, host: me@jetson}
    budget: {max_drop: 1.0}               # min_speedup defaults to 1.0 here: no artifact
                                          # slower than the original passes (null: off)
    optimize: {prune: [0, 0.3], dwsep: [off], trials: 12}   # for `edgekit optimize --recipe`
    training: {device: auto, precision: auto}   # where distillation trains (optional)

Unknown keys are errors (with the closest valid key), at every level: each step's config is
checked against its pass's own Config schema (the same one `edgekit compress` uses), so a recipe
is wrong before it runs, not half-way through. Relative paths are taken from the recipe's folder
first, then from the working directory, then from the files shipped with edgekit
(edgekit.resources), so a shipped recipe copied elsewhere still finds its calibration set.

What a recipe can make run. A recipe is a file people copy from elsewhere, so it is treated as
a model file is (edgekit.io.archs), not as the command line:

  * `model.arch` (+ `arch_kwargs`) calls a factory: only a listed model factory (the zoo's,
    torchvision's registered builders, `timm:NAME`), with no kwargs that choose weights, URLs,
    paths or folders, and every weights/pretrained parameter forced off (nothing downloads).
  * `model.trust_model: true` would unpickle `model.path` (pickled modules, TorchScript, .pt2
    run code): refused.
  * `model.path` / `model.zoo` are loaded as the CLI loads a model file: weights_only, and the
    checkpoint's own arch through the same list.
Both refusals are lifted only by `--trust-recipe` on the command line (`edgekit run`,
`edgekit optimize --recipe`), which lets the recipe's arch be any importable module:factory and
its trust_model stand. Every other field is data: step names and configs are checked against
the registered passes' schemas, export targets against the table of kinds, device entries
against DeviceProfile, `data` names files or built-in sources read as data (.npz without
pickle, images, CSV), and `report` paths stay inside the output folder. One exception runs
code elsewhere, not here: a device entry's `host`, `port`, `identity_file`, `python` and
`workdir` choose the machine that validation runs on over SSH (with your SSH keys; the model and
eval data go there) and the interpreter it runs; read them before running a recipe you did not
write. The YAML itself is read with a SafeLoader bounded in nodes and characters
(edgekit.config).
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from edgekit import kinds
from edgekit.config import load_yaml, parse_as, read_yaml
from edgekit.errors import ConfigError, UnsafeModelError, shown
from edgekit.optimize.space import OptimizeSettings
from edgekit.validate.gate import Budget
from edgekit.zoo.accel import TrainSettings

RECIPE_VERSION = 1
RECIPE_MIN_SPEEDUP = 1.0  # no artifact slower than the original passes a recipe's gate


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainOverrides(Strict):
    """How to train a model the recipe builds (zoo or arch without weights): the zoo trainer's
    settings (augmentation, cosine schedule with warm-up)."""

    epochs: int | None = Field(None, ge=1)
    limit: int | None = Field(None, ge=1, description="train on a stratified subset of N images")
    lr: float | None = Field(None, gt=0)
    batch_size: int | None = Field(None, ge=1)
    seed: int = 0


class ModelSource(Strict):
    """Exactly one of: a zoo model (trained on first use, cached under .cache/zoo/), a model file,
    or an architecture to build and train."""

    zoo: str | None = None
    path: str | None = None
    arch: str | None = Field(None, description="module:factory, e.g. torchvision.models:resnet18")
    arch_kwargs: dict[str, Any] = Field(default_factory=dict)
    train: TrainOverrides | None = None
    trust_model: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> ModelSource:
        if self.zoo and (self.path or self.arch):
            raise ValueError("give either zoo, or path (with arch for a state_dict), not both")
        if not (self.zoo or self.path or self.arch):
            raise ValueError("name a model: zoo: NAME, path: FILE or arch: module:factory")
        if self.path and self.train:
            raise ValueError("train applies to zoo or arch models; a path is already trained")
        if self.zoo:
            from edgekit.zoo import ZOO

            if self.zoo not in ZOO:
                close = difflib.get_close_matches(self.zoo, list(ZOO), n=1)
                raise ValueError(f"unknown zoo model {shown(self.zoo)}"
                                 + (f"; did you mean {close[0]!r}?" if close else "")
                                 + f" (known: {', '.join(ZOO)})")
        return self


class InputOverride(Strict):
    preprocessing: str | None = Field(None, description="a named preset (imagenet, cifar10, "
                                      "fashion-mnist, mnist, arch); the keys below override it")
    shape: tuple[int, int, int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    resize: int | None = Field(None, ge=1, description="shorter side before the centre crop")
    crop: int | None = Field(None, ge=1, description="centre crop: the model's input H and W")
    channel_order: Literal["RGB", "BGR"] | None = None
    class_names: tuple[str, ...] | None = None

    @field_validator("mean", "std")
    @classmethod
    def _normalisation(cls, values: tuple[float, ...] | None, info: Any) -> Any:
        """The bounds of the --mean/--std flags (edgekit.spec), checked when the recipe loads."""
        from edgekit.spec import normalisation_problem

        if values is not None and (problem := normalisation_problem(info.field_name, values)):
            raise ValueError(problem)
        return values

    @field_validator("resize")
    @classmethod
    def _resize(cls, value: int | None) -> int | None:
        from edgekit.spec import resize_problem

        if value is not None and (problem := resize_problem(value)):
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _channels(self) -> InputOverride:
        """mean/std fit the channels input.shape gives (edgekit.spec.channels_problem, the check
        behind --mean/--std and recorded specs), checked when the recipe loads."""
        from edgekit.spec import channels_problem

        for name in ("mean", "std"):
            values = getattr(self, name)
            if self.shape is not None and values is not None and \
                    (problem := channels_problem(name, values, self.shape[1])):
                raise ValueError(problem)
        return self


class DataConfig(Strict):
    train: str | None = Field(None, description="training data (zoo/arch training, distill)")
    calib: str | None = Field(None, description="calibration set (.npz) or data source")
    eval: str = Field(description="labelled eval data for the accuracy gate")
    eval_limit: int | None = Field(None, ge=1, description="stratified subset of the eval set")
    data_dir: str | None = None


class ExportSpec(Strict):
    target: Literal[kinds.TARGETS]  # type: ignore[valid-type]
    precision: Literal[kinds.PRECISIONS] = "fp32"  # type: ignore[valid-type]
    on_device: bool = Field(False, description="build on the device that runs it (TensorRT "
                            "engines): skipped here, built by the remote validation")
    options: dict[str, Any] = Field(default_factory=dict, description=(
        "target options (workspace_mb, dla, ...), checked against the target's Options"))

    @property
    def stage(self) -> str:
        return f"export-{self.target}-{self.precision}"


class DeviceRef(BaseModel):
    """A profile by name or path, with overrides of its fields (host, threads, batch_sizes,
    latency, ...); the merged profile is checked like a profile file."""

    model_config = ConfigDict(extra="allow")

    profile: str


class ReportConfig(Strict):
    store: str = Field("results.db", description="results store, relative to the output folder")
    html: str = "report.html"
    markdown: str | None = "report.md"


class Recipe(Strict):
    recipe_version: int
    name: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    description: str = ""
    model: ModelSource
    input: InputOverride | None = None
    data: DataConfig
    steps: list[dict[str, dict[str, Any] | None]] = Field(default_factory=list)
    exports: list[ExportSpec] = Field(default_factory=list)
    devices: list[str | DeviceRef] = Field(default_factory=lambda: ["local-cpu"])
    budget: Budget = Field(default_factory=lambda: Budget(min_speedup=RECIPE_MIN_SPEEDUP))
    decide: str | None = Field(None, description="artifact whose gate decides the exit code")
    optimize: OptimizeSettings | None = Field(None, description="search space of `edgekit "
                                              "optimize --recipe` (issue 15)")
    training: TrainSettings | None = Field(None, description="where distillation trains: "
                                           "{device: auto|cpu|cuda[:N]|mps, precision: "
                                           "auto|fp32|bf16}")

    @field_validator("budget", mode="before")
    @classmethod
    def _never_slower_by_default(cls, value: Any) -> Any:
        """A recipe's budget demands speed-up ≥ 1.0 against the original unless it says
        otherwise (`min_speedup: null` turns the check off)."""
        if isinstance(value, dict) and "min_speedup" not in value:
            return {**value, "min_speedup": RECIPE_MIN_SPEEDUP}
        return value

    report: ReportConfig = Field(default_factory=ReportConfig)
    # Set by load_recipe(trust=True) (--trust-recipe), never by the file: see the module docstring.
    _trusted: bool = PrivateAttr(False)

    @property
    def trusted(self) -> bool:
        """Whether the user trusted this recipe on the command line (--trust-recipe)."""
        return self._trusted

    def step_list(self) -> list[tuple[str, dict[str, Any]]]:
        return [(name, dict(cfg or {})) for step in self.steps for name, cfg in step.items()]

    def fingerprint(self, *parts: str) -> str:
        """A short hash of selected parts of the recipe (stage keys for resume)."""
        data = self.model_dump(mode="json")
        chosen = {p: data.get(p) for p in parts} if parts else data
        return hashlib.sha256(json.dumps(chosen, sort_keys=True).encode()).hexdigest()[:16]


def _check_steps(recipe: Recipe, where: str) -> None:
    from edgekit.passes.base import PASSES, get_pass, order_violation, pass_names

    names = pass_names()
    seen_onnx = None
    seen: list[str] = []
    for i, step in enumerate(recipe.steps):
        if len(step) != 1:
            raise ConfigError(f"{where}: steps[{i}] must name one step, got "
                              f"{shown(sorted(step)) if step else 'none'}",
                              hint="write each step as `- prune: {ratio: 0.3}`")
        name, cfg = next(iter(step.items()))
        if not isinstance(name, str) or (name not in names and name not in _unavailable()):
            close = difflib.get_close_matches(str(name), list(names), n=1)
            raise ConfigError(f"{where}: steps[{i}]: unknown step {shown(name)}",
                              hint=f"did you mean {close[0]!r}?" if close
                              else f"steps are: {', '.join(names)}")
        try:
            cls = get_pass(name)
        except ImportError as exc:
            raise ConfigError(f"{where}: steps[{i}]: step {name!r} is not available in this "
                              f"edgekit ({exc})", hint="install edgekit[torch], or drop the step") \
                from None
        parse_as(cls.Config, dict(cfg or {}), f"{where}: steps[{i}].{name}")
        for earlier in seen:  # the passes' own ordering constraints (Pass.runs_before)
            why = order_violation(earlier, name)
            if why:
                raise ConfigError(f"{where}: steps[{i}]: {name} comes after {earlier}", hint=why)
        seen.append(name)
        if cls.kind == "onnx":
            seen_onnx = name
        elif seen_onnx:
            torch_steps = ", ".join(n for n in names if PASSES[n].kind == "torch")
            raise ConfigError(f"{where}: steps[{i}]: {name} comes after {seen_onnx}",
                              hint=f"PyTorch steps ({torch_steps}) run before {seen_onnx}; "
                              "reorder the steps")


def _unavailable() -> set[str]:
    """Pass modules that could not be imported here (their step says why when it is named)."""
    from edgekit.passes.base import _UNAVAILABLE

    return set(_UNAVAILABLE)


def _check_exports(recipe: Recipe, where: str) -> None:
    """Each export's options against its target's own Options schema (the one `export` uses)."""
    from edgekit.targets.base import get_target

    for i, spec in enumerate(recipe.exports):
        get_target(spec.target).parse_options(spec.options, f"{where}: exports[{i}].options")


def _check_devices(recipe: Recipe, where: str) -> None:
    for i, ref in enumerate(recipe.devices):
        device_profile(ref, where=f"{where}: devices[{i}]")


def device_profile(ref: str | DeviceRef, where: str = "recipe"):
    """The DeviceProfile a recipe's device entry names (with its overrides applied)."""
    from edgekit.devices import DeviceProfile, find_profile, load_profile

    if isinstance(ref, str):
        return load_profile(ref)
    base_path = find_profile(ref.profile)
    base = read_yaml(base_path) or {}
    if not isinstance(base, dict):
        raise ConfigError(f"{base_path} must hold a mapping of keys to values")
    overrides = {k: v for k, v in (ref.model_extra or {}).items()}
    for key in ("latency", "record"):
        if isinstance(overrides.get(key), dict) and isinstance(base.get(key), dict):
            overrides[key] = {**base[key], **overrides[key]}
    return parse_as(DeviceProfile, {**base, **overrides}, where)


TRUST_HINT = ("pass --trust-recipe on the command line if you trust this recipe (its arch may "
              "then be any module:factory, and its trust_model unpickles its model file)")


def _check_trust(recipe: Recipe, where: str) -> None:
    """Refuse what would run code the recipe chose (see the module docstring), unless trusted."""
    if recipe.trusted:
        return
    src = recipe.model
    if src.trust_model:
        raise UnsafeModelError(f"{where}: model.trust_model: a recipe cannot trust its own model "
                               "file (loading a pickled module, TorchScript or .pt2 runs code "
                               "the file holds)", hint=TRUST_HINT)
    if src.arch is not None:
        from edgekit.io.archs import check_file_kwargs, file_factory

        who = f"{where}: model.arch: the recipe"
        file_factory(src.arch, who=who, hint=TRUST_HINT)
        check_file_kwargs(src.arch, src.arch_kwargs, who=who, hint=TRUST_HINT)


def load_recipe(path: str | Path, *, trust: bool = False) -> Recipe:
    """Read and check a recipe: schema, version, each step's config, each device profile, and
    that it names no code to run unless `trust` (--trust-recipe; see the module docstring)."""
    path = Path(path)
    if path.is_file():
        raw = read_yaml(path)
        version = raw.get("recipe_version") if isinstance(raw, dict) else None
        if isinstance(version, int) and version > RECIPE_VERSION:
            raise ConfigError(f"{path} is a version {version} recipe; this edgekit reads up to "
                              f"version {RECIPE_VERSION}", hint="upgrade edgekit")
        if isinstance(raw, dict) and "recipe_version" not in raw:
            raise ConfigError(f"{path} has no recipe_version",
                              hint=f"add `recipe_version: {RECIPE_VERSION}` at the top")
    recipe = load_yaml(Recipe, path)
    recipe._trusted = trust
    where = str(path)
    _check_trust(recipe, where)
    _check_steps(recipe, where)
    _check_exports(recipe, where)
    _check_devices(recipe, where)
    return recipe


def resolve_path(value: str, recipe_path: str | Path) -> str:
    """A file named in a recipe: relative to the recipe's own folder when it exists there (so a
    recipe copied with its files runs from anywhere), else as given from the working directory,
    else a file shipped with edgekit (`calibration/fashion-mnist-512.npz`, or explicitly
    `package:calibration/...`). Data-source names (fashion-mnist:test) pass through."""
    from edgekit.resources import PACKAGE_PREFIX, resolve_file

    if (":" in value and not value.startswith(PACKAGE_PREFIX) and not Path(value).exists()
            and not value.startswith((".", "/"))):
        return value
    return resolve_file(value, base=Path(recipe_path).resolve().parent)
