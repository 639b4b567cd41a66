"""The result record, typed: one row of the results store, one (artifact, device, runtime,
precision, batch) measured by `validate` / `bench` (or a per-layer profile, `record_type:
layer_profile`). It stays a JSON mapping on disk and in memory (the store, the JSON Lines file,
the device's answer and the report read it as such); ResultRecord names its keys, so a signature
that passes records between packages says what they hold instead of `dict[str, Any]`."""

from __future__ import annotations

from typing import Any, TypedDict

from edgekit.runtimes.records import LatencyStats, LayerProfile

# A nested JSON section whose keys belong to the module that writes it (latency statistics:
# runtimes/base.py; accuracy: validate/accuracy.py; the environment: validate/env.py).
Section = dict[str, Any]


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
    runtime_details: Section
    device: str
    device_kind: str
    emulated: bool
    batch: int
    size_bytes: int
    edgekit_version: str
    latency: LatencyStats
    accuracy: Section  # top1, drop, agreement, fidelity, samples
    memory: Section
    environment: Section
    speedup: float | None
    speedup_vs: Section  # the original it is compared with, the interval, the verdict
    gate: Section  # passed, checks, reasons, notes
    decisive: bool
    is_reference: bool
    remote: Section
    optimize: Section
    layers: list[Section]  # a per-layer profile's rows
    profile: LayerProfile  # a per-layer profile (record_type layer_profile)


Records = list[ResultRecord]
