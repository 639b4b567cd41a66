"""The records an `edgekit optimize` search passes between its parts, typed. They stay JSON
mappings (a trial's user attributes in the study, the summary written to disk, the cache's
files); the TypedDicts name their keys, so a signature says what it passes."""

from __future__ import annotations

from typing import Any, TypedDict

from edgekit.optimize.cache import CacheSummary
from edgekit.runtimes.records import PairedSpeedup

# one choice of a knob of the space (`off`, `auto`, a ratio, a `runtime:precision` target)
Choice = str | int | float | bool | None
# a candidate's choices, as the study's trial holds them: space key -> choice
Params = dict[str, Choice]


class Measurement(TypedDict, total=False):
    """One artifact measured on a device (a rung of a candidate, or an original: a baseline):
    its cache key, where it is, the stage and target, p50 latency and top-1 (a fraction), and
    what building and measuring it cost."""

    key: str
    cached: bool
    artifact: str
    stage: str
    target: str
    p50_ms: float
    disturbed: bool | None
    top1: float
    measure_s: float
    float_layers: list[str]
    distill_s: float


class Outcome(TypedDict, total=False):
    """What evaluating one candidate gave: how far it went (`status`), its measured rungs, its
    objective values (None when it was cut) and why it stopped."""

    status: str
    steps: list[Measurement]
    values: list[float] | None
    why: str


class Candidate(TypedDict, total=False):
    """One finished trial as the decision and the summary see it (trials.candidates_of), with
    what the decision adds: its speed-up over the fastest original with the interval and the
    verdict, its top-1 drop in points, whether it is on the front or the winner, the rung it
    reached and why it was cut, and the alternating-rounds confirmation of a winner."""

    trial: int
    name: str
    params: Params
    status: str
    why: str
    values: list[float] | None
    p50_ms: float | None
    top1: float | None  # percent
    disturbed: bool | None
    key: str | None
    artifact: str | None
    steps: list[Measurement]
    cost: dict[str, float]  # seconds: building each stage, measuring, the whole trial
    speedup: float
    speedup_disturbed: bool
    speedup_ci: list[float]
    speedup_ci_level: float
    speed_verdict: str
    drop_points: float
    on_front: bool
    winner: bool
    rung: str | None
    cut: str | None
    confirmed: PairedSpeedup
    confirmation_failed: str
    arch: str  # a promotable candidate's architecture label (study.promotable)
    path: str  # the delivered winner: where it was copied, and its files
    files: list[str]





class DeviceResult(TypedDict, total=False):
    """One device's search as optimize.json records it (Decision._finish): what it could run,
    its originals, every candidate, the front, the winner (delivered into OUT/<device>/) or
    the best tried, why, what was dropped from the space, and for a fleet where it ran."""

    device: str
    targets: list[str]
    batch: int
    baselines: dict[str, Measurement]
    reference_top1: float | None
    fastest_fp32_ms: float | None
    candidates: list[Candidate]
    front: list[str]
    winner: Candidate | None
    why: str
    lost: str | None
    dropped: list[dict[str, Choice]]  # knob, value, why
    notes: list[str]
    space: dict[str, Any]  # the space fitted to this device, SearchSpace.model_dump
    seconds: float
    baselines_s: float  # of `seconds`: the fp32 originals timed (and scored) before the trials
    best_tried: list[str]
    where: str
    resource: str | None
    node: str | None


class OptimizeSummary(TypedDict, total=False):
    """What `edgekit optimize` writes to OUT/optimize.json and prints with --json."""

    model: str
    checkpoint: str
    out: str
    max_drop: float
    min_speedup: float
    space: dict[str, Any]  # OptimizeSettings.model_dump(mode="json")
    devices: dict[str, DeviceResult]
    cache: CacheSummary
    seconds: float
    setup_s: dict[str, float]  # of `seconds`, before any device's search: prepare_s, fit_s
    passed: bool
    report: str | None
