"""Validate an output folder on a device profile: every artifact, on every runtime of the profile
that can run its format and precision, with the one latency protocol, top-1 on the runtime
itself against the fp32 reference, and the accuracy gate.

A runtime of the profile that is not usable here is reported (with the fix) and the rest are
validated; an artifact that no usable runtime can run is reported as skipped. Torch-free.
Where the job runs is an executor's business (edgekit/executors/: local in this process; ssh for a
profile with `host:`, which runs this same validator on the device and brings the records back;
ray on the node that owns the device). `HERE` is what every executor ends up running.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np

from edgekit import kinds
from edgekit.devices import DeviceProfile
from edgekit.errors import DataError, MissingDependencyError, MissingLabelsError
from edgekit.executors import Here, ValidationJob, executor_for
from edgekit.results.record import ResultRecord
from edgekit.results.store import new_run_id
from edgekit.results.validation import (
    ArtifactVerdict,
    Decisive,
    RuntimeStatus,
    ValidationResult,
)
from edgekit.runtimes.records import LatencyStats
from edgekit.validate.gate import Budget, evaluate_gate, pick_decisive

if TYPE_CHECKING:  # pragma: no cover
    from edgekit.io.artifacts import ArtifactEntry

__all__ = ["HERE", "RuntimeStatus", "ValidationResult", "allows_any_drop", "check_above_chance",
           "check_labels", "plan", "run_here", "runtime_status", "save", "summarize", "validate"]


def runtime_status(device: DeviceProfile) -> list[RuntimeStatus]:
    """Which of the profile's runtimes can run here, and why not when they cannot."""
    from edgekit.runtimes.base import get_runner

    out = []
    for name in device.runtimes:
        try:
            cls = get_runner(name)
        except ImportError as exc:
            out.append(RuntimeStatus(name, False, f"edgekit's {name} runner cannot be imported "
                                     f"({exc})"))
            continue
        ok, reason = cls.usable_with(device.runner_options(name))
        out.append(RuntimeStatus(name, ok, reason, tuple(cls.formats)))
    return out


def plan(entries: list[ArtifactEntry], device: DeviceProfile, statuses: list[RuntimeStatus]
         ) -> tuple[list[tuple[ArtifactEntry, list[str]]], list[dict[str, str]]]:
    """(artifact, [runtimes to validate it on]) pairs, and the artifacts nothing here can run."""
    from edgekit.runtimes.base import runner_names

    pairs, skipped = [], []
    for entry in entries:
        fmt, precision = entry.get("format"), entry.get("precision", "fp32")
        usable = [s.name for s in statuses if s.usable and fmt in s.formats
                  and precision in device.runtimes[s.name].precisions]
        if usable:
            pairs.append((entry, usable))
            continue
        blocked = [s for s in statuses if not s.usable
                   and precision in device.runtimes[s.name].precisions
                   and (fmt in s.formats or kinds.default_runtime(fmt) == s.name)]
        if blocked:
            reason = "; ".join(f"needs {s.name}, which is not usable here: {s.reason}"
                               for s in blocked)
        else:
            names = [n for n in device.runtimes if n in runner_names()]
            reason = (f"no runtime of profile {device.name} ({', '.join(names)}) runs "
                      f"{fmt} {precision}")
        skipped.append({"artifact": Path(entry["path"]).name, "format": str(fmt),
                        "precision": str(precision), "reason": reason})
    return pairs, skipped


def check_labels(eval_set: Any, num_outputs: int, source: str) -> None:
    """Labels must index the model's outputs; otherwise top-1 is silently meaningless."""
    if eval_set.y is None:
        raise MissingLabelsError(f"{source} has no labels, and the accuracy gate needs them",
                        hint="give an eval source with labels (npz 'y', IDX labels, class folders)")
    from edgekit.data.dataset import check_classes

    check_classes(getattr(eval_set, "class_names", ()), source, None, num_outputs)
    lo, hi = int(eval_set.y.min()), int(eval_set.y.max())
    if lo < 0 or hi >= num_outputs:
        raise DataError(f"{source} has labels {lo}..{hi}, but the model has {num_outputs} "
                        f"outputs (classes 0..{num_outputs - 1})",
                        hint="use the eval split the model was trained for")


def allows_any_drop(budget: Budget) -> bool:
    """A budget that says top-1 does not matter: any drop allowed (max_drop of 100 points or
    more, no max_drop_rel). Only then is an original at chance level not refused (an untrained
    model timed and compared by agreement, cosine or speed-up)."""
    return budget.max_drop is not None and budget.max_drop >= 100 and budget.max_drop_rel is None


def check_above_chance(ref_logits: np.ndarray, eval_set: Any, source: str,
                       reference: Path) -> None:
    """The original must score significantly above chance on the eval set (one-sided exact
    binomial test against 1/outputs, edgekit.validate.accuracy.chance_check): at chance, the
    labels are not what the model predicts (other classes, another order, other
    preprocessing), every artifact's drop is ~0 and the gate would pass anything. Not checked
    when the budget allows any drop (allows_any_drop)."""
    from edgekit.validate.accuracy import chance_check

    c = chance_check(ref_logits, eval_set.y)
    if c["above_chance"]:
        return
    outputs = ref_logits.shape[1]
    raise DataError(
        f"the original ({reference.name}) scores top-1 {c['top1']:.3f} ({c['correct']} of "
        f"{c['samples']}) on {source}: not significantly above chance for its {outputs} outputs "
        f"({c['chance']:.3f}; binomial p = {c['p_value']:.2g} > {c['alpha']:g}; it needs at least "
        f"{c['critical_top1']:.3f} on {c['samples']} samples), so no accuracy gate can be "
        "judged on it",
        hint="give the eval set the model was trained for, with its labels in the model's class "
        "order (image folders: class names the model records, or output-index prefixes like "
        "0_T-shirt; sorted order = label order) and the model's preprocessing (--mean/--std/"
        "--resize as trained); to time an untrained model anyway, allow any drop: --max-drop "
        "100")


def validate(job: ValidationJob) -> ValidationResult:
    """Validate every artifact of `job.target` (an output folder or one artifact) on
    `job.device`, on the executor the profile asks for. A local run always measures; on a remote
    device the same job is collected again unless `job.rerun`."""
    job = replace(job, target=Path(job.target), budget=job.budget or Budget())
    from edgekit.io.lineage import check_chain

    check_chain(job.target)  # artifacts that were not made from the reference's model are refused
    with executor_for(job.device, HERE) as executor:
        return executor.validate(job)


def run_here(job: ValidationJob) -> ValidationResult:
    """The job, measured in this process on this machine's runtimes (what every executor ends
    up running: the local one here, the SSH one on the device, through `edgekit validate`)."""
    target, device, budget, artifact = job.target, job.device, job.budget, job.artifact
    eval_source, data_dir, limit = job.eval_source, job.data_dir, job.limit
    run_id = job.run_id or new_run_id()
    from edgekit.data import load_dataset
    from edgekit.io.artifacts import find_reference, list_artifacts, spec_for
    from edgekit.validate.bench import measure

    entries = list_artifacts(target)
    statuses = runtime_status(device)
    pairs, skipped = plan(entries, device, statuses)
    result = ValidationResult(device.name, budget, run_id, runtimes=statuses, skipped=skipped)
    if not pairs:
        missing = "; ".join(f"{s.name}: {s.reason}" for s in statuses if not s.usable)
        raise MissingDependencyError(
            f"nothing in {target} can run on {device.name} here"
            + (f" ({missing})" if missing else ""),
            hint="install the runtime the profile names, or choose another --device")
    # A bad --artifact fails before minutes of measuring; the default choice needs the numbers.
    candidates = [_artifact_info(e, Path(target)) for e, _ in pairs]
    if artifact:
        pick_decisive(candidates, artifact)
    ref_path = find_reference(target)
    original = None if ref_path else _recorded_original(target)
    result.reference_note = original.note if original else None
    batches = job.batches or device.batch_sizes
    # Exports from an ONNX file (OpenVINO, TensorRT) do not know the model's name; the folder does.
    folder_model = next((e.get("model") for e in entries if e.get("model")), None)
    eval_cache: dict[str, Any] = {}
    ref_cache: dict[str, np.ndarray | None] = {}
    measured: list[tuple[dict[str, Any], str, list[dict[str, Any]], Any]] = []
    for entry, runtimes in pairs:
        spec = spec_for(entry["path"])
        key = spec.to_json()
        if key not in eval_cache:
            eval_set = load_dataset(eval_source, spec, data_dir=data_dir, limit=limit)
            eval_cache[key], ref_cache[key] = _checked_eval_set(
                eval_set, entry, runtimes[0], spec, device, ref_path, budget, eval_source,
                original)
            if original:
                result.reference_note = original.note
        info = _artifact_info(entry, Path(target))
        info["is_reference"] = bool(ref_path and Path(entry["path"]).resolve()
                                    == ref_path.resolve())
        info["runtimes"] = {}
        for runtime in runtimes:
            records = measure(entry, spec, device, eval_set=eval_cache[key], batches=batches,
                              ref_logits=ref_cache[key], runtime=runtime,
                              model_name=entry.get("model") or folder_model)
            for r in records:
                r["environment"] = _recorded_environment(r.get("environment") or {}, device)
                r.update(run_id=run_id, artifact_name=info["name"], stage=entry.get("stage"),
                         is_reference=info["is_reference"])
            measured.append((info, runtime, records, eval_cache[key]))
        result.artifacts.append(info)
    # Speed-up against the fp32 original on the same runtime and batch, then the gates.
    from edgekit.validate.bench import original_latency

    original = original_latency([(i["is_reference"], rt, recs, ev.x)
                                 for i, rt, recs, ev in measured], ref_path, device, batches)
    _gate(result, measured, original, ref_path, device, budget)
    _decide(result, artifact)
    return result


def _recorded_original(target: str | Path) -> Any:
    from edgekit.validate.original import recorded_original

    return recorded_original(target)


def _original_logits(original: Any, x: np.ndarray, spec: Any) -> np.ndarray | None:
    """The recorded original's logits (edgekit.validate.original), None (and its note saying
    why) when it cannot be built."""
    from edgekit.errors import EdgekitError
    from edgekit.validate.original import original_logits

    try:
        return original_logits(original, x, spec)
    except EdgekitError as exc:
        original.note = (f"no reference for the drop: the original {original.path} cannot be "
                         f"built here ({exc.message}); only finite outputs and the budget's "
                         "other checks are measured")
        original.path = None
        return None


def _checked_eval_set(eval_set: Any, entry: dict[str, Any], runtime: str, spec: Any,
                      device: DeviceProfile, ref_path: Path | None, budget: Budget,
                      eval_source: str, original: Any = None) -> tuple[Any, np.ndarray | None]:
    """The eval set for artifacts of `spec` (its labels checked against the model's outputs,
    class folders mapped to them) and the original's logits on it (None without an original:
    the outputs are then counted on the artifact itself). An original at chance on these labels
    is refused unless the budget allows any drop."""
    from edgekit.validate.bench import open_runner, reference_logits

    eval_set.check_for(spec, need_labels=True)
    ref = reference_logits(ref_path, eval_set, device, spec) if ref_path else None
    if ref is None and original is not None and original.path is not None:
        ref_path = original.path  # the drop's reference only: no speed-up against PyTorch
        ref = _original_logits(original, eval_set.x, spec)
    if ref is None:
        with open_runner(Path(entry["path"]), spec, device, runtime) as probe:
            ref_outputs = probe.infer(eval_set.x[:1]).shape[1]
    else:
        ref_outputs = ref.shape[1]
    eval_set = eval_set.for_outputs(spec, ref_outputs)  # class folders → outputs
    check_labels(eval_set, ref_outputs, eval_source)
    if ref is not None and not allows_any_drop(budget):
        check_above_chance(ref, eval_set, eval_source, ref_path)
    return eval_set, ref


def _gate(result: ValidationResult, measured: list[tuple[dict[str, Any], str, list[Any], Any]],
          original: Any, ref_path: Path | None, device: DeviceProfile, budget: Budget) -> None:
    """Each measured (artifact, runtime): its speed-up against the original, then its gate."""
    from edgekit.validate.bench import attach_speedups, confirm_slower

    for info, runtime, records, eval_set in measured:
        speed = attach_speedups(records, original, ref_path, device.latency.confidence)
        if budget.min_speedup is not None:  # a "slower" from two separate runs is timed again
            confirm_slower(records, ref_path, device, eval_set.x, budget.min_speedup)
        gate = evaluate_gate(records[0]["accuracy"], budget, speed) if records else None
        for r in records:
            r["gate"] = gate
        result.records += records
        info["runtimes"][runtime] = {"passed": bool(gate and gate["passed"]),
                                     "reasons": gate["reasons"] if gate else []}
    for info in result.artifacts:
        info["passed"] = all(v["passed"] for v in info["runtimes"].values())
        info.update(_fastest([r for r in result.records if r["artifact_name"] == info["name"]]))


def _decide(result: ValidationResult, artifact: str | None) -> None:
    """The decisive artifact (the one asked for, else pick_decisive's choice) and its verdict."""
    chosen, why = pick_decisive(result.artifacts, artifact)
    decided = next(a for a in result.artifacts if a["name"] == chosen["name"])
    result.decisive = {"artifact": decided["name"], "why": why, "passed": decided["passed"],
                       "reasons": sorted({x for v in decided["runtimes"].values()
                                          for x in v["reasons"]})}
    for r in result.records:
        r["decisive"] = r["artifact_name"] == decided["name"]


def _fastest(records: list[ResultRecord]) -> ArtifactVerdict:
    """p50 (and its speed-up) at the smallest batch on the artifact's fastest runtime."""
    timed = [r for r in records if (r.get("latency") or {}).get("p50_ms") is not None]
    if not timed:
        return {"p50_ms": None, "speedup": None, "fastest_runtime": None}
    smallest = min(r["batch"] for r in timed)
    best = min((r for r in timed if r["batch"] == smallest), key=lambda r: r["latency"]["p50_ms"])
    return {"p50_ms": best["latency"]["p50_ms"], "speedup": best.get("speedup"),
            "fastest_runtime": best.get("runtime"), "batch": smallest,
            # (issue 18) the speed-up's mark wherever it is printed
            "speedup_disturbed": bool(best["latency"].get("disturbed")
                                      or (best.get("speedup_vs") or {}).get("disturbed"))}


def _recorded_environment(env: dict[str, Any], device: DeviceProfile) -> dict[str, Any]:
    """The environment as the profile asks to record it (Jetson power mode / clocks can be
    turned off in `record:`); never mutates the shared captured dict."""
    jetson = env.get("jetson")
    if not jetson or device.record is None:
        return env
    kept = {k: v for k, v in jetson.items()
            if not (k == "power_mode" and not device.record.power_mode)
            and not (k == "clocks" and not device.record.clocks)}
    return {**env, "jetson": kept}


def _artifact_info(entry: ArtifactEntry, target: Path) -> ArtifactVerdict:
    path = Path(entry["path"])
    rel = str(path.relative_to(target)) if target.is_dir() else path.name
    return {"name": rel, "relpath": rel, "path": str(path), "stage": entry.get("stage"),
            "format": entry.get("format"), "precision": entry.get("precision", "fp32"),
            "size_bytes": path.stat().st_size if path.exists() else None,
            "model": entry.get("model")}


def save(result: ValidationResult, store_path: str | Path) -> list[int]:
    """Append the result's records to the results store (all or none), once: a run already
    stored (same run id) is not stored again, and a rerun of a remote job adds only the records
    it has not stored yet."""
    return result.store(store_path)


class Summary(TypedDict):
    """Pass/fail per artifact and the deciding artifact of stored records (summarize)."""

    artifacts: list[ArtifactVerdict]
    decisive: Decisive
    passed: bool


def summarize(records: list[ResultRecord], artifact: str | None = None) -> Summary:
    """Pass/fail per artifact (over its runtimes) and the deciding artifact, from records."""
    arts: dict[str, ArtifactVerdict] = {}
    for r in records:
        name = r.get("artifact_name") or Path(str(r.get("artifact"))).name
        info = arts.setdefault(name, {"name": name, "relpath": name, "stage": r.get("stage"),
                                      "format": r.get("format"), "precision": r.get("precision"),
                                      "size_bytes": r.get("size_bytes"), "runtimes": {},
                                      "is_reference": bool(r.get("is_reference"))})
        gate = r.get("gate") or {}
        info["runtimes"][r.get("runtime")] = {"passed": bool(gate.get("passed")),
                                              "reasons": gate.get("reasons") or []}
    for info in arts.values():
        info["passed"] = all(v["passed"] for v in info["runtimes"].values())
        info.update(_fastest([r for r in records if (r.get("artifact_name") or Path(str(
            r.get("artifact"))).name) == info["name"]]))
    if not arts:
        return {"artifacts": [], "decisive": {}, "passed": False}
    chosen, why = pick_decisive(list(arts.values()), artifact)
    decisive = {"artifact": chosen["name"], "why": why, "passed": chosen["passed"],
                "reasons": sorted({x for v in chosen["runtimes"].values() for x in v["reasons"]})}
    return {"artifacts": list(arts.values()), "decisive": decisive, "passed": chosen["passed"]}


def _alternate_here(artifacts: dict[str, tuple[Path, str]], device: DeviceProfile, *, spec: Any,
                    x: Any, rounds: int) -> dict[str, LatencyStats]:
    from edgekit.validate.bench import alternate_here

    return alternate_here(artifacts, device, spec=spec, x=x, rounds=rounds)


# What the executors run in the process that measures (this one, the device's, a Ray node's).
HERE = Here(validate=run_here, alternate=_alternate_here, check=runtime_status)
