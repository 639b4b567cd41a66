"""Validation on another machine over SSH (a Jetson, a test bench): the numbers of a device only
mean something when measured on it, and TensorRT engines are not portable, so the validator runs
there and the records come home. The validator reaches this package only through
`edgekit.executors.ssh`.

    ssh.py      transport: the system OpenSSH client, host-key checking always on; errors
    agent.py    the device side: a standard-library script sent over stdin on every call (with
                agent_files.py and agent_probe.py ahead of it, ssh.agent_source)
    device.py   what the device has and lacks, and the one command that fixes each piece
    payload.py  what one validation sends: artifacts, eval sets, tasks, the job id, and the
                device program (edgekit/validate/device_program.py) by path
    job.py      one validation job, from the device check to the records
    alternate.py two artifacts timed together in alternating rounds on the device (a job)
"""

from __future__ import annotations

from edgekit.remote.device import DeviceReport, build_report, check_remote, runtime_fix
from edgekit.remote.job import RemoteValidationResult, validate_remote
from edgekit.remote.payload import (
    Payload,
    build_payload,
    check_artifact_names,
    device_side_profile,
    device_state,
    safe_relpath,
    write_eval_npz,
)
from edgekit.remote.ssh import (
    DeviceUnreachableError,
    HostKeyError,
    RemoteAuthError,
    RemoteError,
    RemotePathError,
    SSHTransport,
    check_remote_profile,
)

__all__ = ["DeviceReport", "DeviceUnreachableError", "HostKeyError", "Payload",
           "RemoteAuthError", "RemoteError", "RemotePathError", "RemoteValidationResult",
           "SSHTransport", "build_payload", "build_report", "check_artifact_names",
           "check_remote", "check_remote_profile", "device_side_profile", "device_state",
           "runtime_fix", "safe_relpath", "validate_remote", "write_eval_npz"]
