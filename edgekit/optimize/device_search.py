"""One device's search in `edgekit optimize`: what it can run, its baselines, its trials' outcomes,
and the least time a search of it needs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgekit.errors import MissingDependencyError
from edgekit.kinds import default_runtime
from edgekit.optimize.cache import DeviceState
from edgekit.optimize.records import Measurement


def import_optuna():
    try:
        import optuna
    except ImportError:
        raise MissingDependencyError("edgekit optimize needs Optuna",
                                     hint="pip install 'edgekit[optimize]'") from None
    import warnings

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # BruteForceSampler and the heartbeat are marked experimental; both are what we want.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


@dataclass
class DeviceSearch:
    """One device's search: what it can run, its baselines, its trials' outcomes."""

    device: Any
    targets: list[str]
    batch: int
    state: DeviceState
    baselines: dict[str, Measurement] = field(default_factory=dict)  # runtime -> original's
    unusable: dict[str, str] = field(default_factory=dict)  # runtime or target -> why not
    lost: str | None = None
    seconds: float = 0.0
    baselines_s: float = 0.0  # timing the fp32 originals (and the reference logits), before the trials
    fleet: Any = None  # its FleetDevice (name, Ray resource, node)
    executor: Any = None  # where its work runs (edgekit.executors.executor_for), set by the run
    here: bool = True  # this process times its candidates (the executor's `measures_here`)
    space: Any = None  # the space fitted to the model and this device (optimize/adapt.py)
    dropped: list[dict[str, Any]] = field(default_factory=list)  # knobs dropped: {knob, value, why}
    notes: list[str] = field(default_factory=list)  # e.g. layers round_to keeps whole
    inapplicable: dict[tuple[str, str], str] = field(default_factory=dict)  # knob found a no-op
    cut: dict[str, str] = field(default_factory=dict)  # candidate -> why it stopped short

    @property
    def measured_here(self) -> bool:
        """True when this process times the device's candidates (a local profile, no cluster)."""
        return self.here

    @property
    def fastest_fp32_ms(self) -> float:
        return min(c["p50_ms"] for c in self.baselines.values())

    @property
    def fastest_baseline(self) -> Measurement:
        return min(self.baselines.values(), key=lambda c: c["p50_ms"])

    @property
    def reference_top1(self) -> float:
        """The original's top-1 (fp32 ONNX on ONNX Runtime where the space has it)."""
        first = self.baselines.get(default_runtime("onnx")) or next(iter(self.baselines.values()))
        return first["top1"]


def minimum_seconds(searches: list[DeviceSearch]) -> float:
    """The least time in which every device can measure its baselines and one candidate: each
    measurement runs the protocol's warm-up and its minimum timing span."""
    total = 0.0
    for s in searches:
        per = s.device.latency.warmup_seconds + s.device.latency.min_seconds
        runtimes = {t.split(":")[0] for t in s.targets}
        total += per * (len(runtimes) + 1)
    return total


def usable_targets(device: Any, targets: list[str], *, here: bool | None = None
                   ) -> tuple[list[str], list[str]]:
    """Targets whose runtime can run here. A device measured elsewhere (`here=False`: on the
    device itself, or on a cluster node; by default as its executor says): all of them, checked
    there; TensorRT engines are built on the device from each candidate's ONNX model (the
    remote path's build step), and a device without TensorRT or a GPU says so at the first one."""
    if here is None:
        from edgekit.executors import executor_class

        here = executor_class(device).measures_here
    if not here:
        return list(targets), []
    from edgekit.validate.validator import runtime_status

    status = {s.name: s for s in runtime_status(device)}
    ok = [t for t in targets if status.get(t.split(":")[0]) and status[t.split(":")[0]].usable]
    missing = sorted({f"{s.name}: {s.reason}" for s in status.values() if not s.usable})
    return ok, missing


