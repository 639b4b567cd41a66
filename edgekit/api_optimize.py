"""`edgekit.optimize(...)`: the search of `edgekit optimize` as a function (edgekit.api holds
compress, export and validate; this module the optimize call and its result types)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.api_args import (
    ModelInput,
    budget_arg,
    checked,
    group_arg,
    path_arg,
)
from edgekit.data.given import DataSources
from edgekit.errors import ConfigError, InputError, shown

if TYPE_CHECKING:  # pragma: no cover
    from edgekit.devices import DeviceProfile
    from edgekit.io.models import ModelBundle
    from edgekit.optimize.records import Candidate, OptimizeSummary
    from edgekit.validate.gate import Budget
    from edgekit.zoo.accel import TrainSettings

from edgekit.api import as_bundle  # noqa: E402


# ---------------------------------------------------------------- optimize
@dataclass
class OptimizeWinner:
    """A device's winner: the candidate's name, its artifact in OUT/<device>/, its speed-up
    against the fp32 original, its top-1 (%) and its drop against the original (points)."""

    name: str
    path: Path
    speedup: float | None
    top1: float | None
    drop: float | None
    p50_ms: float | None


@dataclass
class DeviceOptimum:
    """One device's search: its winner (None when nothing met the budget), why, and every
    candidate as `edgekit optimize --json` lists it."""

    device: str
    winner: OptimizeWinner | None
    why: str
    candidates: list[Candidate]
    lost: str | None = None


@dataclass
class OptimizeResult:
    """What `optimize` found: per device its winner and candidates, `passed` (every device has
    a winner and none was lost), and the summary `edgekit optimize --json` prints."""

    output: Path
    devices: dict[str, DeviceOptimum]
    passed: bool
    summary: OptimizeSummary

    @property
    def winners(self) -> dict[str, OptimizeWinner | None]:
        return {name: d.winner for name, d in self.devices.items()}

    def to_json(self) -> dict[str, Any]:
        return self.summary

    @classmethod
    def from_summary(cls, summary: OptimizeSummary) -> OptimizeResult:
        devices = {}
        for name, result in summary["devices"].items():
            w = result.get("winner")
            winner = None if not w else OptimizeWinner(
                w["name"], Path(w["path"]), w.get("speedup"), w.get("top1"),
                w.get("drop_points"), w.get("p50_ms"))
            devices[name] = DeviceOptimum(name, winner, result.get("why") or "",
                                          result["candidates"], result.get("lost"))
        return cls(Path(summary["out"]), devices, bool(summary["passed"]), summary)


def optimize_settings(space: Any, budget: Budget) -> Any:
    """OptimizeSettings from `space` (None, a mapping of a recipe's `optimize:` fields, a
    SearchSpace or OptimizeSettings), with the budget's min_speedup when it gives one."""
    from edgekit.config import parse_as
    from edgekit.optimize.space import OptimizeSettings, SearchSpace

    if isinstance(space, SearchSpace):
        space = space.model_dump(exclude_unset=True)
    if space is not None and not isinstance(space, Mapping):
        raise ConfigError(f"space={shown(space)} is not a search space",
                          hint="pass space={'prune': [0, 0.3], 'precisions': ['fp32', 'int8']} "
                               "(a recipe's `optimize:` fields) or a SearchSpace")
    given = dict(space or {})
    if budget.min_speedup is not None:
        if given.get("min_speedup", budget.min_speedup) != budget.min_speedup:
            raise ConfigError(f"budget min_speedup {budget.min_speedup:g} and space "
                              f"min_speedup {given['min_speedup']} disagree",
                              hint="give min_speedup in one of them")
        given["min_speedup"] = budget.min_speedup
    return parse_as(OptimizeSettings, given, "space")


def device_profiles(devices: Any) -> list[Any]:
    """Profiles from a name, YAML path or DeviceProfile, or a list of them."""
    from edgekit.devices import DeviceProfile, load_profile

    if isinstance(devices, str | os.PathLike | DeviceProfile):
        devices = [devices]
    if not isinstance(devices, Iterable) or isinstance(devices, Mapping | bytes):
        raise ConfigError(f"devices={shown(devices)} is not a list of devices",
                          hint="pass devices=['local-cpu'] (profile names, YAML paths or "
                               "DeviceProfiles)")
    profiles = []
    for device in devices:
        if isinstance(device, DeviceProfile):
            profiles.append(device)
        elif isinstance(device, str | os.PathLike) and str(device).strip():
            profiles.append(load_profile(device))
        else:
            raise ConfigError(f"devices: {shown(device)} is not a device",
                              hint="a profile name ('local-cpu'), a YAML path or a DeviceProfile")
    if not profiles:
        raise ConfigError("devices=[] names no device", hint="pass devices=['local-cpu']")
    return profiles


def model_checkpoint(bundle: ModelBundle) -> Path:
    """An in-memory model saved as an edgekit checkpoint in the cache (.cache/api-models/,
    named by its sha256), for the search's cache keys and candidates to refer to."""
    import tempfile

    from edgekit.io.files import cache_dir, sha256_file
    from edgekit.io.models import save_checkpoint

    folder = cache_dir() / "api-models"
    folder.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=folder, prefix=".model-", suffix=".pt")
    os.close(handle)
    try:
        save_checkpoint(bundle, tmp)
        path = folder / f"{bundle.name}-{sha256_file(tmp)[:16]}.pt"
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


@checked
def optimize(model: Any, output: str | Path, *,
             data: DataSources | Mapping[str, Any] | None = None,
             devices: Iterable[str | Path | DeviceProfile] | str = ("local-cpu",),
             space: Mapping[str, Any] | Any | None = None,
             budget: Budget | Mapping[str, float] | None = None,
             model_input: ModelInput | Mapping[str, Any] | None = None,
             training: TrainSettings | Mapping[str, Any] | None = None) -> OptimizeResult:
    """Search for the fastest artifact of `model` (an nn.Module, a ModelBundle or a PyTorch
    model file) that keeps its accuracy on each of `devices`, into the folder `output`, as
    `edgekit optimize` does (the same Optimizer): candidates measured there, the Pareto front
    of latency against top-1, and each device's winner in OUT/<device>/.

    data: DataSources(eval=, train=, calib=, data_dir=, eval_limit=) (or a mapping): the
        labelled eval data top-1 is measured on (required), training data for distillation,
        the int8 calibration set (default: a sample of train).
    devices: profile names, YAML paths or DeviceProfiles (default local-cpu).
    space: the fields of a recipe's `optimize:` section ({"prune": [0, 0.3], "precisions":
        ["fp32", "int8"], "trials": 4, ...}) or a SearchSpace / OptimizeSettings.
    budget: {"max_drop": POINTS (default 1.0), "min_speedup": X} (a Budget).
    model_input: ModelInput(...) (or a mapping): how to read the model, as for compress.
    training: where distillation trains ({"device": "cuda", "precision": "bf16"}).

    Returns an OptimizeResult: per device the winner (path, speed-up, top-1, drop) and the
    candidates, and `passed`; nothing meeting the budget is `passed == False`, not an
    exception. A misspelt or wrong-typed argument is a ConfigError naming it."""
    from edgekit.data.given import data_sources
    from edgekit.optimize.job import optimizer_for, run_optimizer
    from edgekit.zoo.accel import TrainSettings

    out = path_arg("output", output)
    sources = data_sources(data)
    if sources.preprocessing is not None:
        raise ConfigError("data: preprocessing is validate's; optimize reads the data with the "
                          "model's own preprocessing",
                          hint="give the model's preprocessing in model_input=ModelInput("
                               "preprocessing=...)")
    limits = budget_arg(budget, only=("max_drop", "min_speedup"))
    settings = optimize_settings(space, limits)
    how = group_arg("model_input", model_input, ModelInput)
    train = group_arg("training", training, TrainSettings) if training is not None else None
    profiles = device_profiles(devices)
    if not sources.eval:
        raise InputError("optimize measures top-1 on each device and needs an eval set",
                         hint="pass data=DataSources(eval='fashion-mnist:test') (or your own "
                              "labelled data)")
    from edgekit.io.outputs import check_output_folder

    check_output_folder(out)  # before the model is even loaded
    bundle = as_bundle(model, input_shape=how.input_shape, spec=how.spec, arch=how.arch,
                       arch_kwargs=how.arch_kwargs, trust_model=how.trust_model,
                       preprocessing=how.given())
    checkpoint = Path(model) if isinstance(model, str | os.PathLike) else model_checkpoint(bundle)
    optimizer = optimizer_for(checkpoint, profiles, settings, out, sources,
                              max_drop=limits.max_drop, bundle=bundle, train=train)
    optimizer.live_progress = False  # the API prints nothing: the result says it all
    from edgekit.events import quiet

    with quiet():  # nothing on stderr; a sink the caller installed (edgekit.events) gets the lines
        return OptimizeResult.from_summary(run_optimizer(optimizer))


__all__ = ["DeviceOptimum", "OptimizeResult", "OptimizeWinner", "optimize"]
