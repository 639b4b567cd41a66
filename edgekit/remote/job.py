"""Validation on another machine over SSH (a Jetson, a test bench): the numbers of a device only
mean something when measured on it, and TensorRT engines are not portable, so the validator runs
there and the records come home.

Transport is the system OpenSSH client (`ssh`, `scp`) with the user's keys and host-key checking,
never disabled (`StrictHostKeyChecking=yes`, `BatchMode=yes`). On the device, a small
standard-library script (`edgekit/remote/agent.py`, sent over stdin on every call) checks the
environment, stores files content-addressed by sha256, runs the job detached under a device lock
and hands back what it produced. Only the lean, torch-free part of edgekit runs on the device.

    validate_remote(ValidationJob(target=out, device=profile, data=DataSources(eval=...)))
      1. check the device: reachable, Python, edgekit and the profile's runtimes (with the fix)
      2. collect the artifacts (+ ONNX external data, OpenVINO .bin, manifest) and the eval set,
         sampled here and saved model-ready (the device needs neither the data nor torch)
      3. send what the device does not have yet (verified by sha256; a failed copy is retried)
      4. prepare jobs/<job id>/ and start it; the job id hashes everything that defines the
         measurement, so a rerun after a dropped connection reattaches to (or collects) the
         same job instead of measuring and recording twice
      5. wait for it (with a timeout), collect the records, tag them with the device's
         environment (JetPack/L4T, power mode, clocks) and return a ValidationResult; a job that
         died or timed out comes back marked partial, with what it finished.

Parts (edgekit/remote/): ssh.py (transport, errors), device.py (the device report and its fixes),
payload.py (files, eval sets, tasks, job id), agent.py (the device side), job.py (this module:
one validation job, from the check to the records).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit import __version__
from edgekit.devices import DeviceProfile
from edgekit.errors import MissingDependencyError
from edgekit.events import emit
from edgekit.remote.device import DeviceReport, check_remote
from edgekit.remote.payload import (
    Payload,
    build_payload,
    check_artifact_names,
)
from edgekit.remote.ssh import (
    RemoteError,
    SSHTransport,
    _last_line,
    _target_label,
    check_remote_profile,
)
from edgekit.results.record import ResultRecord
from edgekit.results.validation import RuntimeStatus, ValidationJob, ValidationResult


# ------------------------------------------------------------------------------ the result
@dataclass
class RemoteValidationResult(ValidationResult):
    """A ValidationResult measured on a remote device, with the job that produced it."""

    job_id: str = ""
    job_state: str = ""  # complete | partial
    partial_reason: str | None = None
    host: str = ""
    reused: bool = False  # the job had already run; its records were collected again
    job_status: dict[str, Any] = field(default_factory=dict)  # started/finished/attempt on device
    device_report: dict[str, Any] = field(default_factory=dict)
    copied: dict[str, int] = field(default_factory=dict)

    @property
    def partial(self) -> bool:
        return self.job_state != "complete"

    def to_json(self, *, with_samples: bool = False) -> dict[str, Any]:
        out = super().to_json(with_samples=with_samples)
        out["remote"] = {"host": self.host, "job_id": self.job_id, "job_state": self.job_state,
                         "partial": self.partial, "partial_reason": self.partial_reason,
                         "reused": self.reused, "copied": self.copied,
                         "job_status": self.job_status,
                         "device": self.device_report}
        return out

    def store_new_records(self, store_path: str | Path) -> list[int]:
        """Append the records the store does not have yet (by record key): a rerun that
        collects the same job, or resumes a partial one, never records anything twice."""
        return self.store(store_path)


# --------------------------------------------------------------------------- orchestration
def sync_blobs(transport: SSHTransport, profile: DeviceProfile, payload: Payload) -> dict[str, int]:
    """Send the blobs the device lacks (verified there by sha256, corrupt ones resent)."""
    by_sha: dict[str, Path] = {}
    for rel, sha in payload.sha.items():
        by_sha.setdefault(sha, payload.files[rel])
    have = transport.agent("have", {"workdir": profile.workdir, "blobs": sorted(by_sha)})
    missing = [s for s in sorted(by_sha) if s not in set(have["present"])]
    stats = {"files": len(by_sha), "already_there": len(by_sha) - len(missing), "sent": 0,
             "bytes_sent": 0, "copy_attempts": 0}
    if missing:
        total = sum(by_sha[s].stat().st_size for s in missing)
        emit(f"copying {len(missing)} file(s), {total / 1e6:.1f} MB, to {profile.host} "
             f"({stats['already_there']} already there)")
    token = os.urandom(8).hex()
    for _round in range(2):
        for sha in missing:
            stats["copy_attempts"] += transport.upload(by_sha[sha],
                                                       f"{have['incoming']}/{sha}.{token}")
            stats["bytes_sent"] += by_sha[sha].stat().st_size
        if not missing:
            break
        committed = transport.agent("commit", {"workdir": profile.workdir, "blobs": missing,
                                               "token": token})
        stats["sent"] += len(committed["committed"])
        missing = sorted(committed["bad"])
        if missing:
            emit(f"{len(missing)} file(s) arrived damaged; sending them again")
    if missing:
        raise RemoteError(f"{len(missing)} file(s) kept arriving damaged on {profile.host}",
                          hint="check the device's disk space and the network, then rerun")
    return stats


def start_job(transport: SSHTransport, profile: DeviceProfile, job_id: str, *,
              wait_s: float, poll_s: float) -> str:
    """Start (or reattach to) the job; wait while another job holds the device."""
    deadline = time.monotonic() + wait_s
    announced = None
    while True:
        answer = transport.agent("start", {"workdir": profile.workdir, "job_id": job_id})
        state = answer["state"]
        if state != "busy":
            return state
        owner = answer.get("owner") or {}
        if owner.get("job_id") != announced:
            announced = owner.get("job_id")
            emit(f"{profile.host} is busy with job {announced or '?'}; waiting (one job per "
                 "device at a time)")
        if time.monotonic() > deadline:
            raise RemoteError(f"{profile.host} stayed busy with job {owner.get('job_id')} for "
                              f"{wait_s:g}s", hint="wait for it to finish, or stop it on the "
                              f"device (kill the process group {owner.get('pgid')})")
        time.sleep(poll_s)


def wait_job(transport: SSHTransport, profile: DeviceProfile, job_id: str, *, timeout_s: float,
             poll_s: float) -> tuple[str, str | None]:
    """Poll until the job is done or dead; cancel it past the timeout. (state, reason)."""
    deadline = time.monotonic() + timeout_s + 30.0
    interval, seen = min(0.5, poll_s), -1
    while True:
        answer = transport.agent("poll", {"workdir": profile.workdir, "job_id": job_id})
        if answer["tasks_done"] != seen:
            seen = answer["tasks_done"]
            if answer["state"] == "running":
                emit(f"job {job_id[:12]} on {profile.host}: {seen}/{answer['tasks']} "
                     "artifact task(s) done")
        if answer["state"] == "done":
            return "done", None
        if answer["state"] == "dead":
            return "dead", ("the job on the device stopped without finishing (killed, or the "
                            "device rebooted or lost power)")
        if time.monotonic() > deadline:
            transport.agent("cancel", {"workdir": profile.workdir, "job_id": job_id})
            return "dead", f"the job did not finish within its timeout ({timeout_s:g}s)"
        time.sleep(interval)
        interval = min(poll_s, interval * 1.5)


def checked_device(transport: SSHTransport, device: DeviceProfile) -> DeviceReport:
    """The device's report; raises when something blocking is missing, says what else is."""
    emit(f"checking {device.name} at {_target_label(device)}")
    report = check_remote(device, transport=transport)
    for warning in report.warnings:
        emit(f"warning: {warning}")
    blocking = [m for m in report.missing if m["blocking"]]
    if blocking:
        first = blocking[0]
        raise MissingDependencyError(f"{device.host} cannot run the validation: missing "
                                     f"{first['what']}", hint=f"on the device: {first['fix']}")
    for m in report.missing:
        emit(f"{device.host} lacks {m['what']} (validating the rest); fix: {m['fix']}")
    return report


def run_prepared(transport: SSHTransport, device: DeviceProfile, payload: Payload, *,
                 job_timeout: float, poll_s: float) -> tuple[dict[str, Any], bool, str | None]:
    """Prepare the job of `payload` (its blobs already sent), start it (or reattach to it, or
    collect it when it already ran), wait for it and fetch what it produced:
    (the agent's result answer, whether the job had already run, why it stopped early)."""
    transport.agent("prepare", {
        "workdir": device.workdir, "job_id": payload.job_id,
        "files": payload.sha, "device_profile": payload.device_yaml,
        "job": {"tasks": payload.tasks, "timeout": job_timeout, "python": device.python,
                "edgekit_version": __version__}})
    state = start_job(transport, device, payload.job_id, wait_s=job_timeout, poll_s=poll_s)
    reused = state == "done"
    emit({"done": f"job {payload.job_id[:12]} already ran on {device.host}; collecting it",
          "running": f"job {payload.job_id[:12]} is already running on {device.host}; "
                     "waiting for it",
          "started": f"job {payload.job_id[:12]} started on {device.host}"}[state])
    reason = None
    if not reused:
        try:
            _, reason = wait_job(transport, device, payload.job_id, timeout_s=job_timeout,
                                 poll_s=poll_s)
        except KeyboardInterrupt:
            emit(f"job {payload.job_id[:12]} keeps running on {device.host}; rerun the same "
                 "command to collect it")
            raise
    answer = transport.agent("result", {"workdir": device.workdir, "job_id": payload.job_id})
    return answer, reused, reason


def validate_remote(job: ValidationJob, *, job_timeout: float | None = None,
                    connect_timeout: float | None = None, transport: SSHTransport | None = None,
                    poll_s: float = 5.0) -> RemoteValidationResult:
    """Validate `job.target` (an output folder or one artifact) on the remote `job.device` and
    return the records as a ValidationResult, as `edgekit validate` does locally.

    A rerun with the same inputs (and device state) collects the same job instead of measuring
    again, and its records are stored once. `job.run_id`, when given (a recipe's stage run), is
    part of the job id and names the records; without it the run id derives from the job id.
    `job.rerun` measures again even if the same job ran."""
    target, device, budget = job.target, job.device, job.budget
    check_remote_profile(device)
    job_timeout = float(job_timeout or device.job_timeout)
    check_artifact_names(target)  # refuse names that would escape before connecting
    if transport is None:
        with SSHTransport(device, connect_timeout=connect_timeout) as own:
            return validate_remote(job, job_timeout=job_timeout, transport=own, poll_s=poll_s)
    report = checked_device(transport, device)
    # Version skew: an artifact the device's runtime cannot load is refused before copying.
    from edgekit.remote.compat import check_skew

    check_skew(target, device, report)
    from edgekit.io.debris import pid_tag, sweep

    sweep(tempfile.gettempdir(), prefix="edgekit-remote-")  # what killed runs left
    with tempfile.TemporaryDirectory(prefix=f"edgekit-remote-{pid_tag()}-") as tmp:
        payload = build_payload(job, report, workdir=Path(tmp), job_timeout=job_timeout,
                                nonce=f"{time.time_ns()}" if job.rerun else "")
        if not payload.tasks:
            raise MissingDependencyError(
                f"nothing in {target} can run on {device.host}: "
                + "; ".join(f"{s['artifact']}: {s['reason']}" for s in payload.skipped),
                hint="install the missing runtime on the device (see above)")
        copied = sync_blobs(transport, device, payload)
    answer, reused, reason = run_prepared(transport, device, payload, job_timeout=job_timeout,
                                          poll_s=poll_s)
    result = _assemble(payload, device, report, answer, budget, reason=reason)
    result.reused, result.copied = reused, copied
    result.decide(job.artifact, partial_reason=result.partial_reason if result.partial else None)
    if result.partial:
        emit(f"PARTIAL: {result.partial_reason}; rerun the same command to resume")
    return result


def _assemble(payload: Payload, device: DeviceProfile, report: DeviceReport,
              answer: dict[str, Any], budget: Any, *, reason: str | None
              ) -> RemoteValidationResult:
    """Merge the per-artifact outputs into one result, tagged with where they were measured."""
    status = answer.get("status") or {}
    job_state = status.get("state") or "partial"
    reason = status.get("reason") or reason
    if job_state == "complete" and reason:
        job_state = "partial"
    if job_state != "complete" and not reason:
        reason = "the job on the device did not finish"
    env = answer.get("environment") or report.environment
    result = RemoteValidationResult(
        device=device.name, budget=budget, run_id=payload.run_id, skipped=list(payload.skipped),
        job_id=payload.job_id, job_state=job_state, partial_reason=reason, host=device.host or "",
        device_report=report.to_json(), job_status=status)
    runtimes: dict[str, RuntimeStatus] = {}
    for index, task in enumerate(answer.get("tasks") or []):
        rel = payload.task_artifacts[index]
        spec = payload.tasks[index]
        if task is None:
            if spec.get("kind") != "step":
                result.skipped.append({"artifact": rel, "reason": f"not measured: {reason}"})
            continue
        if spec.get("kind") == "step":
            if task.get("error"):
                result.skipped.append({"artifact": rel, "reason": "building on the device failed: "
                                       + _last_line(task["error"])})
            continue
        output = task.get("output")
        if not isinstance(output, dict) or task.get("error"):
            result.skipped.append({"artifact": rel, "reason": "failed on the device: "
                                   + _last_line(task.get("error") or "no output")})
            continue
        j = 0
        for one in output.get("results", []):
            for status_json in one.get("runtimes", []):
                runtimes.setdefault(status_json["name"], RuntimeStatus(**{
                    k: tuple(v) if k == "formats" else v for k, v in status_json.items()}))
            names = {}
            for info in one.get("artifacts", []):
                local_rel = rel if not spec.get("globs_engines") else info.get("name")
                names[info.get("name")] = local_rel
                result.artifacts.append({**info, "name": local_rel, "relpath": local_rel,
                                         "path": str(payload.folder / local_rel)})
            result.skipped += [{**s, "artifact": names.get(s.get("artifact"), rel)}
                               for s in one.get("skipped", [])]
            for record in one.get("records", []):
                result.records.append(_tag(record, payload, device, report, env, answer,
                                           index=index, j=j, rel=names.get(
                                               record.get("artifact_name"), rel),
                                           job_state=job_state))
                j += 1
    result.runtimes = list(runtimes.values())
    return result


def _tag(record: ResultRecord, payload: Payload, device: DeviceProfile, report: DeviceReport,
         env: dict[str, Any], answer: dict[str, Any], *, index: int, j: int, rel: str,
         job_state: str) -> dict[str, Any]:
    record = dict(record)
    remote_artifact = record.get("artifact")
    record["artifact"] = str(payload.folder / rel)
    record["artifact_name"] = rel
    record["run_id"] = payload.run_id
    record["record_key"] = f"{payload.job_id}/{index}/{j}"
    record["partial"] = job_state != "complete"
    accuracy = dict(record.get("accuracy") or {})
    if accuracy:
        eval_name = json.loads(payload.tasks[index]["argv"][-1]).get("eval", "")
        accuracy["eval_source"] = payload.eval_source
        accuracy["eval_sample"] = {"file": eval_name, "count": payload.eval_counts.get(eval_name),
                                   "sha256": payload.sha.get(eval_name)}
        record["accuracy"] = accuracy
    environment = dict(record.get("environment") or {})
    jetson = {**(environment.get("jetson") or {}), **(env.get("jetson") or {})}
    if jetson:
        environment["jetson"] = jetson
    if env.get("clocks"):
        environment["clocks"] = env["clocks"]
    record["environment"] = environment
    record["remote"] = {
        "host": device.host, "port": device.port, "job_id": payload.job_id,
        "job_state": job_state, "attempts": answer.get("attempts"),
        "workdir": report.workdir, "artifact": remote_artifact, "python": device.python,
        "edgekit_version": report.edgekit.get("version"),
        "machine": report.environment.get("machine"), "emulated": device.emulated,
    }
    return record
