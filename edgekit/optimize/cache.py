"""The candidate cache: every export and every measurement of `edgekit optimize`, kept in the
output folder so that a rerun, a second device or a larger time budget reuses finished work.

Exports are keyed by what made them (the original's sha256, the architecture, the weights'
training, the target and its options); measurements by the artifact's sha256 plus the device
state (profile name, host, threads, runtime versions, latency protocol) plus the batch and the
eval set. Each entry is one JSON file written atomically, so a process killed mid-search leaves
only whole entries: the rerun measures no finished candidate again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypedDict

from edgekit.io.files import atomic_write_json, sha256_file
from edgekit.results.record import ResultRecord


def digest(*parts: Any) -> str:
    """A short stable hash of JSON-able parts (cache keys, folder names)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def artifact_sha256(path: str | Path) -> str:
    """sha256 of an artifact with its weights file (an OpenVINO IR's .bin, ONNX external data)."""
    from edgekit.kinds import weights_file

    path = Path(path)
    sibling = weights_file(path, existing=True)
    if sibling is None:
        return sha256_file(path)
    return hashlib.sha256((sha256_file(path) + sha256_file(sibling)).encode()).hexdigest()


class CacheSummary(TypedDict):
    """What the candidate cache answered in one run (the optimize summary's `cache`)."""

    hits: int
    measured: int
    hit_keys: list[str]
    measured_keys: list[str]


class DeviceState(TypedDict, total=False):
    """What a latency on a device depends on besides the artifact (part of a measurement's
    cache key): the profile, its host, threads and hint, each runtime's options, the latency
    protocol, and for a local device the runtime versions installed here."""

    profile: str
    host: str | None
    threads: int | None
    performance_hint: str | None
    runtimes: dict[str, dict[str, Any]]  # runtime -> DeviceProfile.runner_options
    protocol: dict[str, Any]  # LatencyProtocol.model_dump(mode="json")
    versions: dict[str, str]


def runtime_dists(runtimes: Iterable[str]) -> list[str]:
    """The distributions whose versions a latency of these runtimes depends on: each registered
    runner's `dists` (edgekit.runtimes.base.Runner), sorted. No runtime is named here: a runtime
    added in one file (a plugin) reaches the cache key with no edit."""
    from edgekit.runtimes.base import get_runner

    return sorted({dist for name in runtimes for dist in get_runner(name).dists})


def device_state(device: Any, *, here: bool | None = None) -> DeviceState:
    """What a latency on this device depends on besides the artifact. A device measured here
    (`here`: its executor's `measures_here`, by default the one `executor_for` picks without a
    cluster) adds the versions installed here of the runtimes the profile names (their runners'
    `dists`); a device measured elsewhere (SSH, a Ray node) records its versions in its own
    job. A key made before (another set of versions) is simply not found: that candidate is
    measured again."""
    from edgekit.executors import executor_class
    from edgekit.io.manifest import library_versions

    state: DeviceState = {
        "profile": device.name, "host": device.host, "threads": device.threads,
        "performance_hint": device.performance_hint,
        "runtimes": {name: device.runner_options(name) for name in sorted(device.runtimes)},
        "protocol": device.latency.model_dump(mode="json")}
    if executor_class(device).measures_here if here is None else here:
        state["versions"] = library_versions(*runtime_dists(device.runtimes))
    return state


class CandidateCache:
    """out/cache/measurements/<key>.json, with counts of hits and fresh measurements."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.hits: list[str] = []
        self.measured: list[str] = []

    def measurement_key(self, artifact: Path, state: DeviceState, runtime: str, batch: int,
                        eval_key: str) -> str:
        return digest(artifact_sha256(artifact), state, runtime, batch, eval_key)

    def _path(self, key: str) -> Path:
        return self.root / "measurements" / f"{key}.json"

    def get(self, key: str, *, count: bool = True) -> ResultRecord | None:
        """The stored record (counted as a hit unless `count` is False), else None."""
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError:  # written atomically; unreadable means edited by hand
            return None
        if count:
            self.hits.append(key)
        return record

    def put(self, key: str, record: ResultRecord) -> None:
        atomic_write_json(self._path(key), record)
        self.measured.append(key)

    def keys(self) -> set[str]:
        folder = self.root / "measurements"
        return {p.stem for p in folder.glob("*.json")} if folder.is_dir() else set()

    def summary(self) -> CacheSummary:
        return {"hits": len(self.hits), "measured": len(self.measured),
                "hit_keys": sorted(set(self.hits)), "measured_keys": list(self.measured)}
