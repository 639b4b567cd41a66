"""The result record, typed: one row of the results store, one (artifact, device, runtime,
precision, batch) measured by `validate` / `bench` (or a per-layer profile, `record_type:
layer_profile`). It stays a JSON mapping on disk and in memory (the store, the JSON Lines file,
the device's answer and the report read it as such); ResultRecord names its keys, so a signature
that passes records between packages says what they hold instead of `dict[str, Any]`."""

from __future__ import annotations

from typing import Any, TypedDict

from edgekit.runtimes.records import LatencyStats, LayerProfile, RuntimeDetails

# A nested JSON section whose keys belong to the module that writes it (latency statistics:
# runtimes/base.py; accuracy: validate/accuracy.py; the environment: validate/env.py).
Section = dict[str, Any]


class AccuracySection(TypedDict, total=False):
    """A record's `accuracy` (validate.accuracy.accuracy_section): top-1, its drop against the
    fp32 reference in points, fidelity to the reference's logits, non-finite outputs."""

    samples: int
    outputs_finite: bool
    top1: float
    fidelity: dict[str, float]  # max_abs_diff, cosine, top1_agreement
    reference_top1: float
    top1_drop_points: float
    eval_source: str
    skipped_images: int


class SpeedupSection(TypedDict, total=False):
    """A record's `speedup_vs` (validate.gate.speedup_section): its p50 against the fp32
    original's (same runtime, device, batch), with the interval when both runs' samples are
    there, where the original's number came from, and why it is missing or disturbed; after
    alternating rounds (validate.bench.confirm_slower) their interval, the first look kept."""

    speedup: float | None
    batch: int
    p50_ms: float | None
    reference_p50_ms: float | None
    reference: str
    runtime: str
    ci_low: float
    ci_high: float
    confidence: float
    method: str
    measured_as: str
    disturbed: list[str]
    missing: str
    rounds: int
    verdict: str
    min_speedup: float
    first_look: SpeedupSection  # the two separate runs' speed-up and interval


class GateCheck(TypedDict, total=False):
    """One check of the gate: the value against its limit, passed, and why not."""

    check: str
    value: Any  # a number, or a bool (outputs_finite), or None when it could not be measured
    limit: Any
    passed: bool
    reason: str
    verdict: str
    ci_low: float
    ci_high: float
    note: str
    disturbed: list[str]


class GateVerdict(TypedDict, total=False):
    """A record's `gate` (validate.gate.evaluate_gate)."""

    passed: bool
    checks: list[GateCheck]
    reasons: list[str]
    budget: dict[str, float]
    notes: list[str]


class CpuInfo(TypedDict):
    """The CPU that measured (validate.env.cpu_info)."""

    model: str
    arch: str
    logical_cores: int | None
    usable_cores: int | None
    flags: dict[str, bool]  # the ISA extensions that matter to int8 kernels
    vnni: bool


class Environment(TypedDict, total=False):
    """A record's `environment` (validate.env.capture_environment): the machine and the
    libraries that measured."""

    hostname: str
    os: str
    python: str
    cpu: CpuInfo
    gpus: list[dict[str, str]]
    versions: dict[str, str]
    jetson: dict[str, str]  # l4t, power_mode, clocks


class ResultRecord(TypedDict, total=False):
    """One measured row. Every record has the identity keys; the sections depend on what was
    measured (no `accuracy` without eval data, no `gate` outside validate)."""

    record_version: int
    record_type: str  # absent for a validation record; "layer_profile" for a profile
    record_key: str  # the device's identity of the record: storing it twice adds nothing
    created: str
    run_id: str
    model: str
    artifact: str
    artifact_name: str
    artifact_sha256: str
    stage: str | None
    format: str
    precision: str
    runtime: str
    runtime_details: RuntimeDetails
    device: str
    device_kind: str
    emulated: bool
    batch: int
    size_bytes: int
    edgekit_version: str
    latency: LatencyStats
    accuracy: AccuracySection
    memory: Section
    environment: Environment
    speedup: float | None
    speedup_vs: SpeedupSection
    gate: GateVerdict
    decisive: bool
    is_reference: bool
    remote: Section
    optimize: Section
    layers: list[Section]  # a per-layer profile's rows
    profile: LayerProfile  # a per-layer profile (record_type layer_profile)


Records = list[ResultRecord]
