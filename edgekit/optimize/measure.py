"""Measuring one candidate on one device: the single place `edgekit optimize` reaches the
runtimes and the remote path, so that they can be swapped (e.g. for the executors) in one spot.

Local devices: `edgekit.validate.bench.measure` — the one latency protocol of runtimes/base.py
and top-1 on the runtime itself over the eval set. Remote devices (a profile with `host:`): the
validator's remote path (`edgekit.validate.validator.validate`, which hands the job to
edgekit.remote), one job at a time; the search waits on the device. With `executor` (the Ray
executor of `edgekit optimize --cluster`, made per device), any device's candidate is sent to it
as a one-artifact validation job instead: it runs on the node that owns the device.

`alternate_on_device` times two artifacts together in alternating rounds (the winner and the
original, to confirm the winner): here with `speedup.alternate` for a local device, on the
device itself through edgekit.remote.alternate for a remote one (the same function, run by the
device's edgekit), and with `executor` (Ray) by one task on the node that owns the device, which
runs this same function there; all come back as the same sample sets for `speedup.compare`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekit.errors import EdgekitError, MissingDependencyError


class DeviceLostError(EdgekitError):
    """A remote device stopped answering during the search (its partial front is kept)."""

    exit_code = 1


class ConfirmationUnavailableError(EdgekitError):
    """Two artifacts cannot be timed together on this device (the winner then stands on the
    interval of its two separate runs)."""

    exit_code = 1


def measure_on_device(entry: dict[str, Any], device: Any, runtime: str, *, spec: Any,
                      batch: int, eval_set: Any, ref_logits: Any, eval_source: str,
                      eval_limit: int | None, data_dir: str | None,
                      executor: Any = None) -> dict[str, Any]:
    """The result record of `entry` (an artifact's manifest entry with its path) run by
    `runtime` on `device` at `batch` (through `executor` when given)."""
    if not device.is_remote and executor is None:
        from edgekit.validate.bench import measure

        return measure(entry, spec, device, eval_set=eval_set, batches=[batch],
                       ref_logits=ref_logits, runtime=runtime, model_name=entry.get("model"))[0]
    from edgekit.remote import HostKeyError, RemoteAuthError, RemoteError, RemotePathError
    from edgekit.validate.validator import validate

    target, precision = Path(entry["path"]), entry.get("build_on_device")
    if precision:  # the device builds the engine from the folder (remote path's build step)
        target, device = target.parent, build_profile(device, precision)
    lost: tuple[type[BaseException], ...] = (RemoteError, OSError)
    if executor is not None:
        from edgekit.executors.ray import ClusterError

        lost += (ClusterError,)  # no node offers the device, or it left the cluster
    try:
        if executor is None:
            result = validate(target, device, eval_source=eval_source, batches=[batch],
                              data_dir=data_dir, limit=eval_limit)
        else:
            from edgekit.executors import ValidationJob
            from edgekit.validate.gate import Budget

            result = executor.run(ValidationJob(target=target, device=device,
                                                eval_source=eval_source, budget=Budget(),
                                                batches=[batch],
                                                data_dir=data_dir, limit=eval_limit))
    except (HostKeyError, RemoteAuthError, RemotePathError):
        raise  # the device answered and refused: bad input, not a lost device
    except lost as exc:
        raise DeviceLostError(f"{device.name} stopped answering: {getattr(exc, 'message', exc)}",
                              hint="rerun the same command when the device is back: the search "
                                   "resumes where it stopped") from None
    records = [r for r in result.records if r.get("runtime") == runtime
               and (not precision or r.get("precision") == precision)]
    if not records and precision:
        raise MissingDependencyError(
            f"{device.name} built no TensorRT {precision} engine: "
            + engine_missing_reason(result, precision),
            hint="check the device with `edgekit devices --remote`; TensorRT needs its Python "
                 "bindings, cuda-python and a visible GPU there")
    if not records:
        raise MissingDependencyError(f"{device.name} did not run {Path(entry['path']).name} on "
                                     f"{runtime}", hint="check `edgekit devices` on the device")
    return records[0]


def build_profile(device: Any, precision: str) -> Any:
    """The device's profile for one remote TensorRT candidate: TensorRT at that precision only
    (so the device builds one engine), and ONNX Runtime at fp32 when the device has it (the
    folder's fp32 model is validated there too, on the way)."""
    runtimes = {"tensorrt": device.runtimes["tensorrt"].model_copy(
        update={"precisions": [precision]})}
    if "onnxruntime" in device.runtimes:
        runtimes["onnxruntime"] = device.runtimes["onnxruntime"].model_copy(
            update={"precisions": ["fp32"]})
    return device.model_copy(update={"runtimes": runtimes})


def engine_missing_reason(result: Any, precision: str) -> str:
    """Why a remote job returned no engine record: the build step's error, or TensorRT (or a
    GPU) not usable on the device, from the job's own report."""
    failed = [s["reason"] for s in result.skipped if "building on the device" in s.get("reason", "")
              or s.get("artifact") == "(tensorrt engines)"]
    if failed:
        return "; ".join(dict.fromkeys(failed))
    report = getattr(result, "device_report", None) or {}
    usable = [n for n, info in (report.get("runtimes") or {}).items() if info.get("importable")]
    if "tensorrt" not in usable:
        missing = [m.get("what", "") for m in report.get("missing") or []
                   if "tensorrt" in str(m.get("what", "")).lower()
                   or "gpu" in str(m.get("what", "")).lower()
                   or "cuda" in str(m.get("what", "")).lower()]
        return ("TensorRT is not usable on the device"
                + (f" ({'; '.join(missing)})" if missing else " (not installed, or no GPU)"))
    return f"the job returned no tensorrt {precision} record"


def alternate_on_device(artifacts: dict[str, tuple[Path, str]], device: Any, *, spec: Any,
                        x: Any, rounds: int, executor: Any = None) -> dict[str, dict[str, Any]]:
    """{label: latency statistics with `samples_ms` and `round_counts`} of `artifacts`
    ({label: (path, runtime)}) timed on `device` on `x` in `rounds` alternating rounds with the
    device's latency protocol (runtimes/speedup.py: `alternate`). A remote device runs the same
    function there (edgekit.remote.alternate); one that stops answering raises DeviceLostError,
    a device the rounds cannot run on ConfirmationUnavailableError."""
    if executor is not None:  # Ray: this function runs again on the node that owns the device
        from edgekit.executors.ray import ClusterError

        try:
            return executor.alternate(artifacts, device, spec=spec, x=x, rounds=rounds,
                                      time_here=alternate_on_device)
        except ClusterError as exc:
            raise DeviceLostError(exc.message, hint="rerun the same command when the node "
                                  "that owns the device is back") from None
    if not device.is_remote:
        from edgekit.runtimes.speedup import alternate
        from edgekit.validate.bench import open_runner

        runners = {label: open_runner(Path(path), spec, device, runtime)
                   for label, (path, runtime) in artifacts.items()}
        return alternate(runners, x, device.latency, rounds)
    if any(runtime == "tensorrt" for _, runtime in artifacts.values()):
        raise ConfirmationUnavailableError(
            "TensorRT engines are built inside each validation job on the device and are not "
            "kept as blobs there; timing one with another artifact is not supported yet")
    from edgekit.remote import HostKeyError, RemoteAuthError, RemoteError, RemotePathError
    from edgekit.remote.alternate import alternate_remote

    try:
        return alternate_remote(artifacts, device, spec=spec, x=x, rounds=rounds)
    except (HostKeyError, RemoteAuthError, RemotePathError):
        raise  # the device answered and refused: bad input, not a lost device
    except (RemoteError, OSError) as exc:
        raise DeviceLostError(str(getattr(exc, "message", exc)),
                              hint="rerun the same command when the device is back: the "
                                   "confirmation is timed then") from None
