"""Benchmark artifacts on this machine: accuracy over the eval split on the runtime itself, then
the latency protocol per batch size. Produces result records (plain dicts, JSON-ready).

Torch-free: `edgekit bench` runs on a device with numpy and a runtime only."""

from __future__ import annotations

import datetime as _dt
import resource
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from edgekit import __version__
from edgekit.data import Dataset, load_dataset
from edgekit.devices import DeviceProfile
from edgekit.io.artifacts import ArtifactEntry, find_reference, list_artifacts, spec_for
from edgekit.io.files import file_size, sha256_file
from edgekit.progress import progress
from edgekit.results.record import AccuracySection, ResultRecord, SpeedupSection
from edgekit.runtimes.base import Runner, get_runner, runner_for_artifact
from edgekit.runtimes.interference import measure_undisturbed
from edgekit.runtimes.records import LatencyStats, PairedSpeedup
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
    from edgekit.kinds import default_runtime

    with open_runner(reference, spec, device, default_runtime("onnx")) as runner, \
            progress(f"Reference logits ({reference.name})", len(eval_set)) as advance:
        return runner.predict(eval_set.x, on_batch=advance)


def measure(entry: ArtifactEntry, spec: InputSpec, device: DeviceProfile, *,
            eval_set: Dataset | None, batches: list[int], ref_logits: np.ndarray | None,
            runtime: str | None = None, model_name: str | None = None) -> list[ResultRecord]:
    """All records (one per batch size) of one artifact on one runtime (its runner closed
    after)."""
    return _opened(entry, spec, device, runtime, eval_set=eval_set, batches=batches,
                   ref_logits=ref_logits, model_name=model_name, score=True)


def measure_reference(entry: ArtifactEntry, spec: InputSpec, device: DeviceProfile, *,
                      eval_set: Dataset, batches: list[int], logits: np.ndarray,
                      runtime: str | None = None) -> list[ResultRecord]:
    """measure() of the reference file on the runtime that computed the reference `logits`
    on `eval_set`, with the same options on this machine: scored from those logits, not
    predicted over the eval set a second time."""
    return _opened(entry, spec, device, runtime, eval_set=eval_set, batches=batches,
                   ref_logits=logits, model_name=None, score=True, logits=logits)


def measure_latency(entry: ArtifactEntry, spec: InputSpec, device: DeviceProfile, *,
                    images: Dataset, batches: list[int], runtime: str | None = None,
                    model_name: str | None = None) -> list[ResultRecord]:
    """measure() without scoring: the latency on the first images of `images`, the records'
    accuracy section empty (optimize's screen rung)."""
    return _opened(entry, spec, device, runtime, eval_set=images, batches=batches,
                   ref_logits=None, model_name=model_name, score=False)


def _opened(entry: ArtifactEntry, spec: InputSpec, device: DeviceProfile, runtime: str | None,
            **how: Any) -> list[ResultRecord]:
    path = Path(entry["path"])
    rss_before = _rss_mb()
    with open_runner(path, spec, device, runtime) as runner:
        rss_loaded = _rss_mb() - rss_before
        return _measure(runner, path, entry, spec, device, rss_loaded=rss_loaded, **how)


def _measure(runner: Runner, path: Path, entry: ArtifactEntry, spec: InputSpec,
             device: DeviceProfile, *, eval_set: Dataset | None, batches: list[int],
             ref_logits: np.ndarray | None, model_name: str | None,
             rss_loaded: float, score: bool = True,
             logits: np.ndarray | None = None) -> list[ResultRecord]:
    base: ResultRecord = {
        "record_version": RECORD_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": model_name or entry.get("model") or path.parent.name,
        "artifact": str(path), "artifact_sha256": sha256_file(path),
        "format": entry.get("format"), "precision": entry.get("precision", "fp32"),
        "runtime": runner.name, "runtime_details": runner.describe(),
        "device": device.name, "device_kind": device.kind,
        "size_bytes": file_size(path), "edgekit_version": __version__,
    }
    if device.emulated:  # (issue 20) top-1 is real; the time is the emulator's
        base["emulated"] = True
    accuracy: AccuracySection = {}
    if eval_set is not None and score:
        if logits is None:
            with progress(f"Accuracy {path.name} on {runner.name}", len(eval_set)) as advance:
                logits = runner.predict(eval_set.x, on_batch=advance)
        accuracy = accuracy_section(logits, eval_set.y, ref_logits)
        accuracy["eval_source"] = eval_set.source
        if getattr(eval_set, "skipped", None):
            accuracy["skipped_images"] = len(eval_set.skipped)
    images = eval_set.x if eval_set is not None else \
        np.random.default_rng(0).standard_normal((max(batches), *spec.shape[1:]), dtype=np.float32)
    inputs = (f"first {{batch}} images of {eval_set.source}, preallocated" if eval_set is not None
              else "random normal inputs (no eval set), preallocated")
    records = []
    for batch in batches:
        x = np.ascontiguousarray(np.resize(np.asarray(images[:batch]), (batch, *spec.shape[1:])),
                                 np.float32)
        budget = device.latency.min_queries
        with progress(f"Latency {path.name} batch {batch}", budget) as advance:
            stats = measure_undisturbed(runner, x, device.latency,
                                        on_sample=lambda _s, a=advance: a(1))
        stats["inputs"] = inputs.format(batch=batch)
        if device.emulated:
            stats["representative"] = False
            stats["note"] = (f"measured under an emulator ({device.name}): not this device's "
                             "speed; compare it with nothing")
        records.append({**base, "batch": batch, "latency": stats, "accuracy": accuracy,
                        "memory": {"rss_load_mb": round(rss_loaded, 1),
                                   "peak_rss_mb": round(resource.getrusage(
                                       resource.RUSAGE_SELF).ru_maxrss / 1024, 1)},
                        "environment": capture_environment()})
    return records


class OriginalLatency(TypedDict, total=False):
    """The fp32 original's latency at one batch on one runtime, as the speed-up compares with
    it: its p50 and samples, what ran, whether the machine disturbed it, or why it is missing."""

    p50_ms: float | None
    samples_ms: list[float] | None
    measured_as: str
    disturbed: bool | None
    disturbed_reasons: list[str]
    missing: str


def original_latency_on(runtime: str, original: Path, device: DeviceProfile, batches: list[int],
                        images: np.ndarray) -> dict[int, OriginalLatency]:
    """p50 per batch of the fp32 original ONNX model on `runtime` when the run did not time it
    there itself, with the device's protocol on the same images: ONNX Runtime runs it as is,
    OpenVINO reads it with its ONNX frontend at f32 (what an fp32 IR export of it runs); other
    runtimes get a `missing` reason."""
    if not get_runner(runtime).reads_onnx:
        why = (f"the fp32 original {original.name} is not built for {runtime} in this run "
               f"(export it for {runtime} too to compare)")
        return {b: {"p50_ms": None, "missing": f"batch {b}: {why}"} for b in batches}
    spec = spec_for(original)
    with open_runner(original, spec, device, runtime) as runner:
        return _original_latency(runner, original, spec, device, runtime, batches, images)


def _original_latency(runner: Runner, original: Path, spec: InputSpec, device: DeviceProfile,
                      runtime: str, batches: list[int], images: np.ndarray
                      ) -> dict[int, OriginalLatency]:
    out: dict[int, OriginalLatency] = {}
    for batch in batches:
        x = np.ascontiguousarray(np.resize(np.asarray(images[:batch]), (batch, *spec.shape[1:])),
                                 np.float32)
        with progress(f"Latency {original.name} (fp32) on {runtime} batch {batch}",
                      device.latency.min_queries) as advance:
            stats = measure_undisturbed(runner, x, device.latency,
                                        on_sample=lambda _s, a=advance: a(1))
        out[batch] = {"p50_ms": stats["p50_ms"], "samples_ms": stats.get("samples_ms"),
                      "measured_as": f"{original.name} read by {runtime} at fp32",
                      "disturbed": stats.get("disturbed"),
                      "disturbed_reasons": stats.get("disturbed_reasons", [])}
    return out


def original_latency(measured: list[tuple[bool, str, list[ResultRecord], np.ndarray]],
                     ref_path: Path | None, device: DeviceProfile, batches: list[int]
                     ) -> dict[tuple[str, int], OriginalLatency]:
    """{(runtime, batch): {p50_ms, measured_as}} of the fp32 original in this run, from
    `measured` = [(is the original, runtime, its records, the images timed)]: the original's own
    records where it ran on that runtime, otherwise timed now (original_latency_on)."""
    if ref_path is None:
        return {}
    out: dict[tuple[str, int], OriginalLatency] = {}
    for is_reference, runtime, records, _ in measured:
        if is_reference:
            for r in records:
                out[(runtime, r["batch"])] = {
                    "p50_ms": r["latency"].get("p50_ms"),
                    "samples_ms": r["latency"].get("samples_ms"), "measured_as": ref_path.name,
                    "disturbed": r["latency"].get("disturbed"),
                    "disturbed_reasons": r["latency"].get("disturbed_reasons", [])}
    for is_reference, runtime, _, images in measured:
        if is_reference or all((runtime, b) in out for b in batches):
            continue
        for batch, entry in original_latency_on(runtime, ref_path, device, batches,
                                                images).items():
            out[(runtime, batch)] = entry
    return out


def attach_speedups(records: list[ResultRecord],
                    original: dict[tuple[str, int], OriginalLatency],
                    ref_path: Path | None, confidence: float = 0.99) -> list[SpeedupSection]:
    """Set each record's `speedup` (p50 of the original over its own, same runtime and batch)
    and `speedup_vs` (both numbers with the interval from both runs' samples, where the
    original's came from, or why it is missing); returns the `speedup_vs` sections, which the
    gate checks."""
    from edgekit.validate.gate import speedup_section

    sections = []
    for record in records:
        batch, runtime = record["batch"], record["runtime"]
        ref: OriginalLatency = original.get((runtime, batch)) or {}
        section = speedup_section(record["latency"].get("p50_ms"), ref.get("p50_ms"),
                                  batch=batch, reference=ref_path.name if ref_path else "",
                                  runtime=runtime, samples_ms=record["latency"].get("samples_ms"),
                                  reference_samples_ms=ref.get("samples_ms"),
                                  confidence=confidence)
        if ref.get("measured_as"):
            section["measured_as"] = ref["measured_as"]
        # (issue 18) a ratio from a disturbed run (either side) carries the mark and the why
        why = [f"this run: {r}" for r in record["latency"].get("disturbed_reasons", [])
               if record["latency"].get("disturbed")]
        why += [f"fp32 original: {r}" for r in ref.get("disturbed_reasons", [])
                if ref.get("disturbed")]
        if why:
            section["disturbed"] = why
        if ref_path is None:
            section["missing"] = (f"batch {batch}: no fp32 original in this folder to compare "
                                  "latency with (a recipe exports it as original.onnx)")
        elif ref.get("p50_ms") is None:
            section["missing"] = ref.get("missing") or (
                f"batch {batch}: the fp32 original {ref_path.name} cannot be timed on "
                f"{runtime} here")
        record["speedup"], record["speedup_vs"] = section["speedup"], section
        sections.append(section)
    return sections


def cannot_run(entry: ArtifactEntry, device: DeviceProfile, runtime: str | None) -> str | None:
    """Why this machine cannot run the artifact (its runtime is missing or unusable as the
    profile configures it, or the forced `runtime` does not read its format), or None."""
    path = Path(entry["path"])
    cls = get_runner(runtime) if runtime else runner_for_artifact(path)
    fmt = entry.get("format")
    if runtime and fmt and fmt not in cls.formats:
        return (f"{cls.name} does not read {fmt} files ({path.name}); it reads "
                f"{', '.join(cls.formats) or 'nothing here'}")
    ok, reason = cls.usable_with(device.runner_options(cls.name))
    return None if ok else f"needs {cls.name}, which is not usable here: {reason}"


def split_runnable(entries: list[ArtifactEntry], device: DeviceProfile, runtime: str | None, *,
                   single: bool) -> tuple[list[ArtifactEntry], list[ResultRecord]]:
    """(the artifacts this machine can run, a `skipped` record for each one it cannot, with the
    reason), as `validate` does: a copied output folder on a lean device measures what its
    runtimes run. One file given by itself that cannot run here, or a folder of which nothing
    can, is an InputError with the reasons."""
    from edgekit.errors import InputError

    runnable, skipped = [], []
    for entry in entries:
        reason = cannot_run(entry, device, runtime)
        if reason is None:
            runnable.append(entry)
            continue
        skipped.append({"record_version": RECORD_VERSION, "model": entry.get("model"),
                        "artifact": str(entry["path"]), "format": entry.get("format"),
                        "precision": entry.get("precision", "fp32"), "runtime": runtime,
                        "device": device.name, "skipped": reason})
    if not runnable:
        why = "; ".join(f"{Path(s['artifact']).name}: {s['skipped']}" for s in skipped)
        raise InputError(f"nothing to benchmark on this machine ({why})",
                         hint="install the runtime it names, pass --runtime with one that reads "
                              "the artifact, or benchmark another artifact"
                         if single else "install the runtime it names, or copy an artifact "
                                        "a runtime here reads")
    return runnable, skipped


def benchmark(target: str | Path, *, device: DeviceProfile, eval_source: str | None = None,
              batches: list[int] | None = None, runtime: str | None = None,
              reference: str | Path | None = None, data_dir: str | None = None,
              limit: int | None = None) -> list[ResultRecord]:
    """Benchmark one artifact or every artifact of an output folder that this machine can run;
    each artifact it cannot run is a record with `skipped` (the reason) and no measurement."""
    from edgekit.kinds import default_runtime

    entries = list_artifacts(target)
    batches = batches or device.batch_sizes
    if eval_source and not reference:  # top-1 drop against the folder's reference: same model?
        from edgekit.io.lineage import check_chain

        check_chain(target, entries)
    ref_path = Path(reference) if reference else find_reference(target)
    entries, skipped = split_runnable(entries, device, runtime, single=Path(target).is_file())
    records: list[ResultRecord] = list(skipped)
    eval_cache: dict[str, Dataset] = {}
    ref_cache: dict[str, np.ndarray | None] = {}
    measured = []
    for entry in entries:
        spec = spec_for(entry["path"])
        key = spec.to_json()
        if eval_source and key not in eval_cache:
            eval_cache[key] = load_dataset(eval_source, spec, data_dir=data_dir, limit=limit)
            eval_cache[key].check_for(spec)
            ref_cache[key] = reference_logits(ref_path, eval_cache[key], device, spec)
        is_ref = bool(ref_path and Path(entry["path"]).resolve() == ref_path.resolve())
        # the reference on the reference's runtime: its logits are the reference logits
        own = is_ref and (get_runner(runtime) if runtime else runner_for_artifact(
            Path(entry["path"]))).name == default_runtime("onnx")
        logits = ref_cache.get(key) if own else None
        rows = measure_reference(entry, spec, device, eval_set=eval_cache[key], batches=batches,
                                 logits=logits, runtime=runtime) if logits is not None else \
            measure(entry, spec, device, eval_set=eval_cache.get(key), batches=batches,
                    ref_logits=ref_cache.get(key), runtime=runtime)
        images = eval_cache[key].x if key in eval_cache else np.random.default_rng(0) \
            .standard_normal((max(batches), *spec.shape[1:]), dtype=np.float32)  # as measure()
        measured.append((is_ref, rows[0]["runtime"] if rows else runtime, rows, images))
        records += rows
    # Speed-up against the fp32 original, timed here too when the folder holds one.
    if ref_path is not None:
        original = original_latency(measured, ref_path, device, batches)
        for *_, rows, _ in measured:
            attach_speedups(rows, original, ref_path, device.latency.confidence)
    return records


def alternate_here(artifacts: dict[str, tuple[Path, str]], device: DeviceProfile, *,
                   spec: InputSpec, x: np.ndarray, rounds: int) -> dict[str, LatencyStats]:
    """{label: latency statistics with `samples_ms` and `round_counts`} of `artifacts`
    ({label: (path, runtime)}) timed together here on `x` in `rounds` alternating rounds with
    the device's latency protocol (runtimes/speedup.py); every runner closed after."""
    import contextlib

    from edgekit.runtimes.speedup import alternate

    with contextlib.ExitStack() as stack:
        runners = {label: stack.enter_context(open_runner(Path(path), spec, device, runtime))
                   for label, (path, runtime) in artifacts.items()}
        return alternate(runners, x, device.latency, rounds)


@dataclass(frozen=True)
class PairedTiming:
    """What time_against_original times: the candidate and the original (each with the
    runtime that runs it), read as `spec` says, at `batch`."""

    candidate: Path
    original: Path
    spec: InputSpec
    batch: int
    runtime: str | None = None
    original_runtime: str | None = None


def time_against_original(pair: PairedTiming, device: DeviceProfile, images: np.ndarray, *,
                          min_speedup: float, confidence: float, rounds: int = 6,
                          around: Any = None, timer: Any = None) -> PairedSpeedup:
    """`pair`'s candidate and original timed together on `device`, in `rounds` alternating
    rounds on the first `pair.batch` images: a load change that would shift one of two separate
    runs against the other hits both alike and pairs out (runtimes/speedup.py). Returns
    speedup.compare's section (speed-up, interval, verdict against `min_speedup`) with both p50s
    and `rounds`. `around` is a context manager held over the timed rounds only (a progress
    line, a device lock). `timer(artifacts, x)`, with artifacts {label: (path, runtime)},
    times them elsewhere (optimize: on a remote device or its Ray node); its statistics may
    say where (`remote`, `ray`), which the result keeps. By default they are timed here."""
    import contextlib

    from edgekit.runtimes.speedup import compare

    spec, batch = pair.spec, pair.batch
    artifacts = {"candidate": (pair.candidate, pair.runtime),
                 "original": (pair.original, pair.original_runtime)}
    x = np.ascontiguousarray(np.resize(np.asarray(images[:batch]), (batch, *spec.shape[1:])),
                             np.float32)
    with around if around is not None else contextlib.nullcontext():
        if timer is not None:
            timed = timer(artifacts, x)
        else:
            timed = alternate_here(artifacts, device, spec=spec, x=x, rounds=rounds)
    result: PairedSpeedup = {**compare(timed["candidate"], timed["original"],
                                       min_speedup=min_speedup, confidence=confidence),
                             "rounds": rounds, "p50_ms": timed["candidate"]["p50_ms"],
                             "reference_p50_ms": timed["original"]["p50_ms"]}
    for where in ("remote", "ray"):  # timed on the device, or on its node: which job
        if timed["candidate"].get(where):
            result[where] = timed["candidate"][where]
    return result


def confirm_slower(records: list[ResultRecord], ref_path: Path | None, device: DeviceProfile,
                   images: np.ndarray, min_speedup: float, rounds: int = 6) -> None:
    """Time again, in alternating rounds with the original (time_against_original), every
    record whose speed-up the two separate runs put wholly below `min_speedup`: a load change
    between two runs shifts one against the other, while alternating rounds meet it alike and
    pair it out. The record's `speedup_vs` then holds the alternating interval, and
    the two-run one under `first_look`; its `speedup` and p50s (and the record's `speedup`) are
    the alternating rounds'; the record's own latency section is left as it was measured."""
    from edgekit.runtimes.speedup import verdict

    if ref_path is None:
        return
    spec = None
    for record in records:
        section = record.get("speedup_vs") or {}
        if section.get("ci_high") is None or verdict(section, min_speedup) != "slower" \
                or section.get("rounds"):
            continue
        spec = spec or spec_for(ref_path)
        runtime = record["runtime"]
        pair = PairedTiming(Path(record["artifact"]), ref_path, spec, record["batch"],
                            runtime=runtime, original_runtime=runtime)
        interval = time_against_original(
            pair, device, images, min_speedup=min_speedup,
            confidence=section.get("confidence", device.latency.confidence), rounds=rounds,
            around=progress(f"Confirming {Path(record['artifact']).name} against "
                            f"{ref_path.name} ({rounds} alternating rounds)", None))
        first = {k: section.get(k) for k in ("speedup", "ci_low", "ci_high", "method", "p50_ms",
                                             "reference_p50_ms")}
        section.update({k: interval[k] for k in ("speedup", "ci_low", "ci_high", "method",
                                                 "p50_ms", "reference_p50_ms")},
                       first_look=first, rounds=rounds)
        record["speedup"] = section["speedup"]
