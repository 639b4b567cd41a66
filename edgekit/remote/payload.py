"""What one remote validation sends and runs: the artifacts (with the files they need beside
them, names checked so none escapes the device's workdir), eval sets sampled here and saved
model-ready and byte-reproducible, the device-side profile, the tasks, and the job id that hashes
all of it (plus the device state that changes the numbers)."""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from edgekit import kinds
from edgekit.devices import DeviceProfile
from edgekit.errors import InputError
from edgekit.io.files import sha256_file
from edgekit.remote.device import DeviceReport
from edgekit.results.validation import ValidationJob, budget_dict

# The program a job's tasks run on the device (edgekit/validate/device_program.py): a module of
# the lean path above this layer, so it is shipped by path and never imported here. Its file name
# in the job's folder, and its commands (tests/unit/test_remote_programs.py checks they are the
# program's).
PROGRAM_NAME = "edgekit_program.py"
PROGRAM_COMMANDS = ("validate", "alternate")


def program_file() -> Path:
    """The device-side program, sent as a file of every job that runs it."""
    return Path(__file__).resolve().parent.parent / "validate" / "device_program.py"


def program_argv(command: str, args: dict[str, Any]) -> list[str]:
    """The argv of a task running `command` with `args` ("{python}" is the agent's)."""
    if command not in PROGRAM_COMMANDS:
        raise ValueError(f"unknown device program {command!r}")
    return ["{python}", PROGRAM_NAME, command, json.dumps(args, sort_keys=True)]


# -------------------------------------------------------------------------------- payload
def write_eval_npz(path: Path, x: np.ndarray, y: np.ndarray | None) -> None:
    """A byte-for-byte reproducible .npz (fixed zip timestamps), so the same eval sample has the
    same sha256 on every run and is sent to the device once."""
    arrays = {"x": np.ascontiguousarray(x, dtype=np.float32)}
    if y is not None:
        arrays["y"] = np.ascontiguousarray(y, dtype=np.int64)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, arr, allow_pickle=False)


_BAD_NAME = re.compile(r"[\x00-\x1f\\]")


def safe_relpath(path: Path, folder: Path) -> str:
    """`path` relative to `folder`, refused when it would leave it (or the device's workdir):
    '..', an absolute path, a symlink out, control characters."""
    folder_real = folder.resolve()
    try:
        rel = path.absolute().relative_to(folder.absolute()).as_posix()
    except ValueError:
        rel = None
    if rel is None or rel.startswith("/") or any(p in ("", ".", "..") for p in rel.split("/")) \
            or _BAD_NAME.search(rel) or not path.resolve().is_relative_to(folder_real):
        raise InputError(f"artifact {path} lies outside the output folder {folder}; its name "
                         "would escape the device's workdir",
                         hint="keep artifacts inside the output folder (no '..', no symlinks out)")
    return rel


def artifact_files(path: Path) -> list[Path]:
    """An artifact and the files it needs beside it (what travels with it to a device)."""
    return [path, *_siblings(path)]


def _siblings(path: Path) -> list[Path]:
    """Files an artifact needs beside it: OpenVINO's .bin, ONNX external data, a spec sidecar."""
    found = []
    weights = kinds.weights_file(path)
    if weights is not None and weights.is_file():
        found.append(weights)
    if path.suffix == ".onnx":
        from edgekit.io.onnxfile import external_locations, load_onnx

        # load_onnx refuses data outside the folder
        found += [path.parent / loc
                  for loc in external_locations(load_onnx(path, load_external=False))]
    sidecar = path.with_suffix(path.suffix + ".spec.json")
    if sidecar.is_file():
        found.append(sidecar)
    return list(dict.fromkeys(found))


def check_artifact_names(target: str | Path) -> list[str]:
    """The artifacts of `target` relative to their folder; refuses any that would escape it."""
    from edgekit.io.artifacts import list_artifacts

    target = Path(target)
    folder = target if target.is_dir() else target.parent
    return [safe_relpath(Path(e["path"]), folder) for e in list_artifacts(target)]


@dataclass
class Payload:
    """Everything one remote validation needs, and its job id."""

    folder: Path
    files: dict[str, Path]  # path inside the job folder -> local file
    sha: dict[str, str]  # same keys -> sha256
    tasks: list[dict[str, Any]]
    task_artifacts: list[str]  # the artifact (relative to the output folder) of each task
    entries: dict[str, dict[str, Any]]  # artifact rel -> list_artifacts entry
    eval_counts: dict[str, int]
    skipped: list[dict[str, str]]
    device_yaml: str
    eval_source: str = ""
    job_id: str = ""
    run_id: str = ""


def device_side_profile(profile: DeviceProfile) -> str:
    """The profile as the device sees itself: local, without the SSH fields, defaults left out
    (so an older edgekit on the device still reads it)."""
    data = profile.model_dump(mode="json", exclude_defaults=True,
                              exclude={"host", "port", "identity_file", "known_hosts", "python",
                                       "workdir", "connect_timeout", "job_timeout",
                                       "max_opset"})  # checked here, before sending
    data.setdefault("name", profile.name)
    data.setdefault("kind", profile.kind)
    data.setdefault("runtimes", {})
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def build_payload(job: ValidationJob, report: DeviceReport | None, *, workdir: Path,
                  job_timeout: float, nonce: str = "") -> Payload:
    """Collect the job's artifacts and eval sets (written under `workdir`), the tasks, and the
    job id."""
    from edgekit.data import load_dataset
    from edgekit.io.artifacts import find_reference, list_artifacts, spec_for
    from edgekit.io.manifest import MANIFEST_NAME

    target, profile, run_id, budget = Path(job.target), job.device, job.run_id, budget_dict(
        job.budget)
    folder = target if target.is_dir() else target.parent
    reference = find_reference(target)
    files: dict[str, Path] = {}
    by_rel = {safe_relpath(Path(e["path"]), folder): e for e in list_artifacts(target)}
    measured, skipped = _sent_and_skipped(by_rel, profile, report)
    ship = [Path(e["path"]) for _, e in measured]
    if reference is not None and reference not in ship:
        ship.append(reference)
    for path in ship:
        files["out/" + safe_relpath(path, folder)] = path
        for extra in _siblings(path):
            files["out/" + safe_relpath(extra, folder)] = extra
    if (folder / MANIFEST_NAME).is_file():
        files["out/" + MANIFEST_NAME] = folder / MANIFEST_NAME
    # Eval sets: one per distinct input spec, sampled here, model-ready on the device.
    eval_names: dict[str, str] = {}
    eval_counts: dict[str, int] = {}
    tasks, task_artifacts = [], []
    device_yaml = device_side_profile(profile)
    for rel, entry in measured:
        spec = spec_for(entry["path"])
        key = spec.to_json()
        if key not in eval_names:
            dataset = load_dataset(job.eval_source, spec, data_dir=job.data_dir, limit=job.limit)
            dataset.check_for(spec, need_labels=True)
            name = f"eval-{len(eval_names)}.npz"
            local = workdir / name
            write_eval_npz(local, dataset.x, dataset.y)
            files[name] = local
            eval_names[key], eval_counts[name] = name, len(dataset)
        # What the device runs for one artifact: the validator itself (the device program, the code
        # `edgekit validate` runs), printing the result with its latency samples, which the
        # store keeps for the report's plots. The run id joins the arguments once the job id
        # (which it may derive from) is known.
        args = {"target": "out/" + rel, "device": "device.yaml", "eval": eval_names[key],
                "budget": budget, "batches": job.batches}
        tasks.append({"argv": program_argv("validate", args), "ok_codes": [0]})
        task_artifacts.append(rel)
    tasks += _tensorrt_tasks(profile, report, measured, eval_names, budget, job.batches)
    task_artifacts += ["(tensorrt engines)"] * (len(tasks) - len(task_artifacts))
    if tasks:
        files[PROGRAM_NAME] = program_file()
    sha = {rel: sha256_file(path) for rel, path in files.items()}
    job_id = job_identity(sha, tasks, device_yaml, job_timeout, report, nonce, run_id)
    run_id = run_id or f"remote-{job_id[:16]}"
    tasks = [with_run_id(task, run_id) for task in tasks]
    return Payload(folder, files, sha, tasks, task_artifacts, by_rel, eval_counts, skipped,
                   device_yaml, job.eval_source, job_id, run_id)


def _sent_and_skipped(by_rel: dict[str, dict[str, Any]], profile: DeviceProfile,
                      report: DeviceReport | None
                      ) -> tuple[list[tuple[str, dict[str, Any]]], list[dict[str, str]]]:
    """The artifacts (relative path, entry) the device measures, and those it cannot, with the
    reason: an engine built elsewhere (not portable), a runtime the device lacks."""
    measured: list[tuple[str, dict[str, Any]]] = []
    skipped: list[dict[str, str]] = []
    usable = set(report.usable_runtimes) if report else set(profile.runtimes)
    for rel, entry in by_rel.items():
        fmt = entry.get("format")
        kind = kinds.by_format(str(fmt)) or kinds.by_suffix(Path(entry["path"]))
        runtime = kinds.default_runtime(str(fmt))
        if kind is not None and not kind.portable:
            reason = ("TensorRT engines are not portable: it is rebuilt on the device from the "
                      "ONNX model")
        elif runtime and runtime in profile.runtimes and runtime not in usable:
            reason = f"{runtime} is not installed on the device"
        else:
            measured.append((rel, entry))
            continue
        skipped.append({"artifact": rel, "format": str(fmt),
                        "precision": str(entry.get("precision", "fp32")), "reason": reason})
    return measured, skipped


def with_run_id(task: dict[str, Any], run_id: str) -> dict[str, Any]:
    """`task` with `run_id` among its program's arguments (a task that runs no device
    program, e.g. an `edgekit export` step, as it is)."""
    argv = task["argv"]
    if len(argv) != 4 or argv[1] != PROGRAM_NAME or argv[2] != "validate":
        return task
    args = {**json.loads(argv[3]), "run_id": run_id}
    return {**task, "argv": program_argv(argv[2], args)}


def job_identity(sha: dict[str, str], tasks: list[dict[str, Any]], device_yaml: str,
                 job_timeout: float, report: DeviceReport | None, nonce: str = "",
                 run_id: str | None = None) -> str:
    """The job id: a hash of everything that defines the measurement (files, tasks, profile,
    timeout, the device's state), so a rerun reattaches to or collects the same job."""
    identity = {"files": sha, "tasks": tasks, "device": device_yaml, "timeout": job_timeout,
                "device_state": device_state(report), "nonce": nonce, "run_id": run_id}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]


class DeviceState(TypedDict, total=False):
    """What of a remote device's state changes its numbers (part of the job id): edgekit's,
    Python's and each runtime's version and, on a Jetson, its release, power mode and whether
    its clocks are locked."""

    edgekit: str | None
    python: str | None
    runtimes: dict[str, str | None]
    jetson: dict[str, str | int | None] | None  # l4t, jetpack, power_mode, power_mode_id
    clocks_locked: bool | None


def device_state(report: DeviceReport | None) -> DeviceState:
    """What of the device's state changes its numbers: software versions and, on a Jetson, the
    release, power mode and whether clocks are locked. Part of the job id, so after
    `sudo nvpmodel -m 1` the same command measures again instead of returning the old job."""
    if report is None:
        return {}
    jetson = report.jetson
    return {"edgekit": report.edgekit.get("version"), "python": report.python.get("version"),
            "runtimes": {n: i.get("version") or report.packages.get(n)
                         for n, i in sorted(report.runtimes.items())},
            "jetson": {k: jetson.get(k) for k in ("l4t", "jetpack", "power_mode",
                                                   "power_mode_id")} if jetson else None,
            "clocks_locked": (report.environment.get("clocks") or {}).get("locked")
            if jetson else None}


def _tensorrt_tasks(profile: DeviceProfile, report: DeviceReport | None,
                    measured: list[tuple[str, dict[str, Any]]], eval_names: dict[str, str],
                    budget: dict[str, Any], batches: list[int] | None) -> list[dict[str, Any]]:
    """When the profile has TensorRT and the device can use it: build the engines there
    (`edgekit export out --target tensorrt --precision P`), then validate them. Untested here:
    it needs a device with TensorRT."""
    if "tensorrt" not in profile.runtimes or report is None \
            or "tensorrt" not in report.usable_runtimes:
        return []
    if not any(e.get("format") == "onnx" for _, e in measured) or not eval_names:
        return []
    eval_name = next(iter(eval_names.values()))
    tasks = []
    for precision in profile.runtimes["tensorrt"].precisions:
        tasks.append({"argv": ["{python}", "-m", "edgekit", "export", "out", "--target",
                               "tensorrt", "--precision", precision, "--parity-data", eval_name],
                      "ok_codes": [0], "kind": "step"})
    engine_globs = [f"out/*{s}" for s in kinds.by_format("tensorrt").suffixes]
    args = {"target": "out", "globs": engine_globs, "device": "device.yaml",
            "eval": eval_name, "budget": budget, "batches": batches}
    tasks.append({"argv": program_argv("validate", args), "ok_codes": [0],
                  "globs_engines": True})
    return tasks
