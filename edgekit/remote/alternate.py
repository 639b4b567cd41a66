"""Two artifacts timed together on a remote device, in alternating rounds: the device-side twin of
what `edgekit optimize` does locally to confirm a winner against the original
(edgekit.runtimes.speedup.alternate).

The device runs the very same `alternate` (torch-free, numpy and the runtimes only) with the
device's own latency protocol, through its own edgekit's lean path, as one task of an ordinary
remote job: the artifacts are content-addressed blobs the device already holds from measuring
them (nothing is copied again), the input batch is a small .npz. The samples of both sides come
home (with their round counts), so the workstation computes the speed-up and its verdict with
the same code as for a local device (`speedup.compare`). The job id hashes the files, the task
and the device state, so asking again collects the same job instead of timing again.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.devices import DeviceProfile
from edgekit.remote.job import checked_device, run_prepared, sync_blobs
from edgekit.remote.payload import (
    PROGRAM_NAME,
    Payload,
    _siblings,
    device_side_profile,
    job_identity,
    program_argv,
    program_file,
    safe_relpath,
    write_eval_npz,
)
from edgekit.remote.ssh import RemoteError, SSHTransport, _last_line, check_remote_profile
from edgekit.runtimes.records import LatencyStats


@dataclass(frozen=True)
class AlternationJob:
    """One alternating timing: `artifacts` ({label: (local path, runtime)}) timed on `device`
    on the input batch `x` (read as `spec` says) in `rounds` alternating rounds, their order
    shuffled by `seed`."""

    artifacts: dict[str, tuple[Path, str]]
    device: DeviceProfile
    spec: Any  # edgekit.spec.InputSpec
    x: np.ndarray
    rounds: int = 6
    seed: int = 0


def alternate_payload(job: AlternationJob, report: Any, *, workdir: Path, job_timeout: float,
                      nonce: str = "") -> Payload:
    """The job of one alternating timing: each artifact (with the files beside it) under its
    label's folder, the input batch, one task."""
    artifacts, device, spec, x, rounds, seed = (job.artifacts, job.device, job.spec, job.x,
                                                job.rounds, job.seed)
    files: dict[str, Path] = {}
    where: dict[str, dict[str, str]] = {}
    for label, (path, runtime) in artifacts.items():
        path = Path(path)
        files[f"{label}/{path.name}"] = path
        for extra in _siblings(path):
            files[f"{label}/{safe_relpath(extra, path.parent)}"] = extra
        where[label] = {"path": f"{label}/{path.name}", "runtime": runtime}
    inputs = workdir / "inputs.npz"
    write_eval_npz(inputs, x, None)
    files["inputs.npz"] = inputs
    files[PROGRAM_NAME] = program_file()
    # What the device runs: its own edgekit's `alternate` on its own runtimes (the timing loop of
    # runtimes/base.py that its validator uses), printing both sample sets with their round
    # counts (edgekit/validate/device_program.py: alternate_command).
    args = {"artifacts": where, "device": "device.yaml", "inputs": "inputs.npz",
            "spec": spec.model_dump(mode="json"), "rounds": rounds, "seed": seed}
    tasks = [{"argv": program_argv("alternate", args), "ok_codes": [0],
              "kind": "alternate"}]
    from edgekit.io.files import sha256_file

    sha = {rel: sha256_file(path) for rel, path in files.items()}
    device_yaml = device_side_profile(device)
    job_id = job_identity(sha, tasks, device_yaml, job_timeout, report, nonce)
    first = Path(next(iter(artifacts.values()))[0])
    return Payload(first.parent, files, sha, tasks, ["(alternating rounds)"], {}, {}, [],
                   device_yaml, job_id=job_id, run_id=f"remote-{job_id[:16]}")


def alternate_remote(job: AlternationJob, *, job_timeout: float | None = None,
                     connect_timeout: float | None = None,
                     transport: SSHTransport | None = None, poll_s: float = 2.0
                     ) -> dict[str, LatencyStats]:
    """{label: latency statistics with `samples_ms` and `round_counts`} of `job.artifacts`
    ({label: (local path, runtime)}) timed on the remote `job.device` on `job.x` in
    `job.rounds` alternating rounds, as `speedup.alternate` returns them here; each also
    carries `remote` (host, job id, whether the job had already run). Raises RemoteError when
    the device drops or the timing fails there."""
    device = job.device
    check_remote_profile(device)
    job_timeout = float(job_timeout or device.job_timeout)
    if transport is None:
        with SSHTransport(device, connect_timeout=connect_timeout) as own:
            return alternate_remote(job, job_timeout=job_timeout, transport=own, poll_s=poll_s)
    report = checked_device(transport, device)
    with tempfile.TemporaryDirectory(prefix="edgekit-remote-") as tmp:
        payload = alternate_payload(job, report, workdir=Path(tmp), job_timeout=job_timeout)
        sync_blobs(transport, device, payload)
    answer, reused, reason = run_prepared(transport, device, payload, job_timeout=job_timeout,
                                          poll_s=poll_s)
    return collect_timed(answer, payload, device, set(job.artifacts), reused=reused,
                         reason=reason)


def collect_timed(answer: dict[str, Any], payload: Payload, device: DeviceProfile,
                  labels: set[str], *, reused: bool = False, reason: str | None = None
                  ) -> dict[str, LatencyStats]:
    """The timed sample sets out of the agent's `result` answer for the job of `payload`, each
    with `remote` (host, job id, whether the job had already run); RemoteError with the device's
    own words when the rounds did not finish or failed there."""
    task = (answer.get("tasks") or [None])[0]
    status = answer.get("status") or {}
    if task is None:
        raise RemoteError(f"the alternating rounds did not finish on {device.host}: "
                          f"{status.get('reason') or reason or 'the job stopped'}",
                          hint="rerun the same command: the job is picked up again")
    output = task.get("output")
    timed = output.get("timed") if isinstance(output, dict) else None
    if task.get("error") or not isinstance(timed, dict) or set(timed) != labels:
        raise RemoteError(f"the alternating rounds failed on {device.host}: "
                          + _last_line(task.get("error") or "no output"),
                          hint=f"see jobs/{payload.job_id}/logs/ in the device's workdir")
    where = {"host": device.host, "job_id": payload.job_id, "reused": reused,
             "finished": status.get("finished")}
    return {label: {**stats, "remote": where} for label, stats in timed.items()}
