"""Benchmark artifacts on this machine: accuracy over the eval split on the runtime itself, then
the latency protocol per batch size. Produces result records (plain dicts, JSON-ready).

Torch-free: `edgekit bench` runs on a device with numpy and a runtime only."""

from __future__ import annotations

import datetime as _dt
import resource
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import __version__
from edgekit.data import Dataset, load_dataset
from edgekit.devices import DeviceProfile
from edgekit.io.artifacts import find_reference, list_artifacts, spec_for
from edgekit.io.files import file_size, sha256_file
from edgekit.progress import progress
from edgekit.runtimes.base import Runner, get_runner, runner_for_artifact
from edgekit.spec import InputSpec
from edgekit.validate.accuracy import accuracy_section
from edgekit.validate.env import capture_environment

RECORD_VERSION = 1


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * resource.getpagesize() / 2**20
    except OSError:
        return float("nan")


def open_runner(path: Path, spec: InputSpec, device: DeviceProfile,
                runtime: str | None = None) -> Runner:
    cls = get_runner(runtime) if runtime else runner_for_artifact(path)
    return cls(path, spec, threads=device.threads, options=device.runner_options(cls.name))


def reference_logits(reference: Path | None, eval_set: Dataset | None, device: DeviceProfile,
                     spec: InputSpec) -> np.ndarray | None:
    if reference is None or eval_set is None:
        return None
    runner = open_runner(reference, spec, device, "onnxruntime")
    with progress(f"Reference logits ({reference.name})", len(eval_set)) as advance:
        return runner.predict(eval_set.x, on_batch=advance)


def measure(entry: dict[str, Any], spec: InputSpec, device: DeviceProfile, *,
            eval_set: Dataset | None, batches: list[int], ref_logits: np.ndarray | None,
            runtime: str | None = None, model_name: str | None = None) -> list[dict[str, Any]]:
    """All records (one per batch size) of one artifact on one runtime."""
    path = Path(entry["path"])
    rss_before = _rss_mb()
    runner = open_runner(path, spec, device, runtime)
    rss_loaded = _rss_mb() - rss_before
    base = {
        "record_version": RECORD_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": model_name or entry.get("model") or path.parent.name,
        "artifact": str(path), "artifact_sha256": sha256_file(path),
        "format": entry.get("format"), "precision": entry.get("precision", "fp32"),
        "runtime": runner.name, "runtime_details": runner.describe(),
        "device": device.name, "device_kind": device.kind,
        "size_bytes": file_size(path), "edgekit_version": __version__,
    }
    accuracy: dict[str, Any] = {}
    if eval_set is not None:
        with progress(f"Accuracy {path.name} on {runner.name}", len(eval_set)) as advance:
            logits = runner.predict(eval_set.x, on_batch=advance)
        accuracy = accuracy_section(logits, eval_set.y, ref_logits)
        accuracy["eval_source"] = eval_set.source
    images = eval_set.x if eval_set is not None else \
        np.random.default_rng(0).standard_normal((max(batches), *spec.shape[1:]), dtype=np.float32)
    inputs = (f"first {{batch}} images of {eval_set.source}, preallocated" if eval_set is not None
              else "random normal inputs (no eval set), preallocated")
    records = []
    for batch in batches:
        x = np.ascontiguousarray(np.resize(images, (batch, *spec.shape[1:])), np.float32)
        budget = device.latency.min_queries
        with progress(f"Latency {path.name} batch {batch}", budget) as advance:
            stats = runner.measure_latency(x, device.latency,
                                           on_sample=lambda _s, a=advance: a(1))
        stats["inputs"] = inputs.format(batch=batch)
        records.append({**base, "batch": batch, "latency": stats, "accuracy": accuracy,
                        "memory": {"rss_load_mb": round(rss_loaded, 1),
                                   "peak_rss_mb": round(resource.getrusage(
                                       resource.RUSAGE_SELF).ru_maxrss / 1024, 1)},
                        "environment": capture_environment()})
    return records


def benchmark(target: str | Path, *, device: DeviceProfile, eval_source: str | None = None,
              batches: list[int] | None = None, runtime: str | None = None,
              reference: str | Path | None = None, data_dir: str | None = None,
              limit: int | None = None) -> list[dict[str, Any]]:
    """Benchmark one artifact or every artifact of an output folder."""
    entries = list_artifacts(target)
    batches = batches or device.batch_sizes
    if eval_source and not reference:  # top-1 drop against the folder's reference: same model?
        from edgekit.io.lineage import check_chain

        check_chain(target, entries)
    ref_path = Path(reference) if reference else find_reference(target)
    records: list[dict[str, Any]] = []
    eval_cache: dict[str, Dataset] = {}
    ref_cache: dict[str, np.ndarray | None] = {}
    for entry in entries:
        spec = spec_for(entry["path"])
        key = spec.to_json()
        if eval_source and key not in eval_cache:
            eval_cache[key] = load_dataset(eval_source, spec, data_dir=data_dir, limit=limit)
            eval_cache[key].check_for(spec)
            ref_cache[key] = reference_logits(ref_path, eval_cache[key], device, spec)
        records += measure(entry, spec, device, eval_set=eval_cache.get(key), batches=batches,
                           ref_logits=ref_cache.get(key), runtime=runtime)
    return records
