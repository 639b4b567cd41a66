"""Measuring one candidate on one device: the single place `edgekit optimize` reaches the
runtimes and the device's executor.

Work the device's executor (edgekit.executors: local, SSH or Ray, picked once per device by
`executor_for`) measures here is timed in this process with `edgekit.validate.bench.measure` (the
one latency protocol of runtimes/base.py and top-1 on the runtime itself over the eval set, with
the original's logits already at hand); anywhere else a candidate is sent as a one-artifact
validation job (the device runs the validator on it), one job at a time; the search waits on the
device.

`alternate_on_device` times two artifacts together in alternating rounds (the winner and the
original, to confirm the winner) with the executor's `alternate`: here with `speedup.alternate`,
on a remote device by the device's own edgekit, on a Ray node by the executor the node runs; all
come back as the same sample sets for `speedup.compare`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from edgekit.errors import MissingDependencyError
from edgekit.executors import (
    ConfirmationUnavailableError,
    DeviceLostError,
    Executor,
    ValidationJob,
)
from edgekit.results.record import ResultRecord
from edgekit.runtimes.base import get_runner
from edgekit.runtimes.records import LatencyStats

if TYPE_CHECKING:  # pragma: no cover
    from edgekit.io.artifacts import ArtifactEntry

__all__ = ["ConfirmationUnavailableError", "DeviceLostError", "EvalLogits", "alternate_on_device",
           "build_profile", "engine_missing_reason", "measure_on_device"]


class EvalLogits(NamedTuple):
    """The original's fp32 reference logits on the eval set, computed here; `own`: the file
    measured is that reference on the runtime (and options) that computed them, so they are
    its own logits too."""

    reference: Any
    own: bool = False


def measure_on_device(entry: ArtifactEntry, runtime: str, job: ValidationJob, *,
                      executor: Executor, spec: Any, eval_set: Any,
                      logits: EvalLogits | None, accuracy: bool = True) -> ResultRecord:
    """The result record of `entry` (an artifact's manifest entry with its path) run by
    `runtime` as `job` says (its device, its one batch size, its eval data), through the
    device's `executor`; `spec`, `eval_set` and `logits` are the eval data already loaded
    here, for an executor that measures here. A device that stops answering raises
    DeviceLostError (the search resumes there on a rerun). `accuracy=False` (an executor that
    measures here): latency only, on the eval set's first images (the screen rung). `logits`:
    the reference logits here (and whether the file is that reference on their runtime)."""
    device = job.device
    if executor.measures_here:
        from edgekit.validate.bench import measure, measure_latency, measure_reference

        if not accuracy:
            return measure_latency(entry, spec, device, images=eval_set, batches=job.batches,
                                   runtime=runtime, model_name=entry.get("model"))[0]
        if logits is not None and logits.own:
            return measure_reference(entry, spec, device, eval_set=eval_set,
                                     batches=job.batches, logits=logits.reference,
                                     runtime=runtime)[0]
        return measure(entry, spec, device, eval_set=eval_set, batches=job.batches,
                       ref_logits=logits.reference if logits is not None else None,
                       runtime=runtime, model_name=entry.get("model"))[0]
    from dataclasses import replace

    from edgekit.io.lineage import check_chain

    target, precision = Path(entry["path"]), entry.get("build_on_device")
    if precision:  # the device builds the file from the folder (remote path's build step)
        target, device = target.parent, build_profile(device, runtime, precision)
    check_chain(target)  # as edgekit validate: only artifacts of the reference's model
    try:
        result = executor.validate(replace(job, target=target, device=device))
    except DeviceLostError as exc:
        raise DeviceLostError(f"{device.name} stopped answering: {exc.message}",
                              hint="rerun the same command when the device is back: the search "
                                   "resumes where it stopped") from None
    records = [r for r in result.records if r.get("runtime") == runtime
               and (not precision or r.get("precision") == precision)]
    if not records and precision:
        build = get_runner(runtime).how_built_on_device()
        raise MissingDependencyError(
            f"{device.name} built no {build.title} {precision} {build.product}: "
            + engine_missing_reason(result, runtime, precision),
            hint="check the device with `edgekit devices --remote`"
                 + (f"; {build.needs}" if build.needs else ""))
    if not records:
        raise MissingDependencyError(f"{device.name} did not run {Path(entry['path']).name} on "
                                     f"{runtime}", hint="check `edgekit devices` on the device")
    return records[0]


def build_profile(device: Any, runtime: str, precision: str) -> Any:
    """The device's profile for one candidate of `runtime` that the device builds (its files are
    not portable): that runtime at that precision only (so the device builds one file), and the
    runtime's declared companions at fp32 where the device has them (the folder's fp32 model is
    validated there too, on the way; Runner.device_build)."""
    runtimes = {runtime: device.runtimes[runtime].model_copy(update={"precisions": [precision]})}
    for companion in get_runner(runtime).how_built_on_device().companions:
        if companion in device.runtimes:
            runtimes[companion] = device.runtimes[companion].model_copy(
                update={"precisions": ["fp32"]})
    return device.model_copy(update={"runtimes": runtimes})


def engine_missing_reason(result: Any, runtime: str, precision: str) -> str:
    """Why a remote job returned no record of the file `runtime` builds on the device: the build
    step's error, or the runtime (or what it needs, Runner.device_build) not usable on the
    device, from the job's own report."""
    build = get_runner(runtime).how_built_on_device()
    failed = [s["reason"] for s in result.skipped if "building on the device" in s.get("reason", "")
              or s.get("artifact") == f"({runtime} {build.product}s)"]  # the payload's label
    if failed:
        return "; ".join(dict.fromkeys(failed))
    report = getattr(result, "device_report", None) or {}
    usable = [n for n, info in (report.get("runtimes") or {}).items() if info.get("importable")]
    if runtime not in usable:
        words = (runtime.lower(), *build.report_words)
        missing = [m.get("what", "") for m in report.get("missing") or []
                   if any(word in str(m.get("what", "")).lower() for word in words)]
        return (f"{build.title} is not usable on the device"
                + f" ({'; '.join(missing) if missing else build.unusable})")
    return f"the job returned no {runtime} {precision} record"


def alternate_on_device(artifacts: dict[str, tuple[Path, str]], device: Any, *, spec: Any,
                        x: Any, rounds: int, executor: Executor) -> dict[str, LatencyStats]:
    """{label: latency statistics with `samples_ms` and `round_counts`} of `artifacts`
    ({label: (path, runtime)}) timed on `device` on `x` in `rounds` alternating rounds with the
    device's latency protocol (runtimes/speedup.py: `alternate`), by the device's `executor`.
    A device that stops answering raises DeviceLostError, a device the rounds cannot run on
    ConfirmationUnavailableError."""
    try:
        return executor.alternate(artifacts, device, spec=spec, x=x, rounds=rounds)
    except DeviceLostError as exc:
        raise DeviceLostError(exc.message, hint=f"{exc.hint}: the confirmation is timed then"
                              if exc.hint else None) from None
