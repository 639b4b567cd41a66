"""The SSH executor: the work runs on the device named by the profile's `host:`, through
`edgekit.remote` (content-addressed copies, the device-side agent, a detached job that a rerun
collects instead of measuring twice). The device runs the same validator as `edgekit validate`,
and the same alternating rounds as a local confirmation (edgekit.remote.alternate); the records
come back tagged with the device's environment and a record key, so storing them again adds
nothing.

The transport's errors are translated here: a device that answered and refused (its host key,
the login, a path that leaves the workdir) keeps its error; one that stopped answering, or
failed on the way, is a DeviceLostError with the transport's message, hint and exit code."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

from edgekit.devices import DeviceProfile
from edgekit.errors import MissingDependencyError
from edgekit.executors.base import (
    Artifacts,
    ConfirmationUnavailableError,
    DeviceLostError,
    Executor,
    ValidationJob,
)
from edgekit.results.validation import RuntimeStatus, ValidationResult
from edgekit.runtimes.records import LatencyStats

T = TypeVar("T")


def _remote(device: DeviceProfile) -> Any:
    try:
        import edgekit.remote as remote
    except ImportError as exc:
        raise MissingDependencyError(
            f"device {device.name} is remote (host {device.host}), and remote validation is "
            f"not available in this edgekit ({exc})",
            hint="use a local profile, or install an edgekit with edgekit.remote") from None
    return remote


def _translated(device: DeviceProfile, work: Callable[[], T], *, hint: str | None = None) -> T:
    """`work()`, its transport errors translated (see the module's docstring); `hint` replaces
    a lost device's hint when given."""
    remote = _remote(device)
    try:
        return work()
    except (remote.HostKeyError, remote.RemoteAuthError, remote.RemotePathError):
        raise  # the device answered and refused: bad input, not a lost device
    except remote.RemoteError as exc:
        _lost(exc.message, hint or exc.hint, exc.exit_code, getattr(exc, "partial_result", None))
    except OSError as exc:
        _lost(f"{device.host}: {exc}", hint or "check the connection to the device, then rerun",
              None, None)


def _lost(message: str, hint: str | None, exit_code: int | None, partial: Any) -> NoReturn:
    raise DeviceLostError(message, hint, exit_code=exit_code, partial_result=partial) from None


class SSHExecutor(Executor):
    name = "ssh"

    def validate(self, job: ValidationJob) -> ValidationResult:
        remote = _remote(job.device)
        # run_id as given: edgekit.remote derives one from its job id if None.
        return _translated(job.device, lambda: remote.validate_remote(job))

    def alternate(self, artifacts: Artifacts, device: DeviceProfile, *, spec: Any, x: Any,
                  rounds: int) -> dict[str, LatencyStats]:
        if any(runtime == "tensorrt" for _, runtime in artifacts.values()):
            raise ConfirmationUnavailableError(
                "TensorRT engines are built inside each validation job on the device and are "
                "not kept as blobs there; timing one with another artifact is not supported yet")
        _remote(device)
        from edgekit.remote.alternate import AlternationJob, alternate_remote

        job = AlternationJob(artifacts, device, spec=spec, x=x, rounds=rounds)
        return _translated(device, lambda: alternate_remote(job),
                           hint="rerun the same command when the device is back")

    def check(self, device: DeviceProfile) -> list[RuntimeStatus]:
        """What the device itself reports (edgekit.remote's check over SSH): its usable
        runtimes, and for the rest the one command that installs them."""
        remote = _remote(device)
        report = _translated(device, lambda: remote.check_remote(device))
        fixes = {m["what"]: m["fix"] for m in report.missing}
        out = []
        for name in device.runtimes:
            usable = name in report.usable_runtimes
            out.append(RuntimeStatus(name, usable, "" if usable else
                                     f"not installed on {device.host}; fix: "
                                     f"{fixes.get(f'runtime {name}', '?')}"))
        return out

    @classmethod
    def builds_on_device(cls, device: DeviceProfile) -> bool:
        return True
