"""The local executor: the work runs in this process, on this machine's runtimes."""

from __future__ import annotations

from typing import Any

from edgekit.devices import DeviceProfile
from edgekit.executors.base import Artifacts, ConfirmationUnavailableError, Executor, ValidationJob
from edgekit.results.validation import RuntimeStatus, ValidationResult
from edgekit.runtimes.records import LatencyStats


class LocalExecutor(Executor):
    name = "local"
    measures_here = True

    def validate(self, job: ValidationJob) -> ValidationResult:
        return self.here.validate(job)

    def alternate(self, artifacts: Artifacts, device: DeviceProfile, *, spec: Any, x: Any,
                  rounds: int) -> dict[str, LatencyStats]:
        if self.here.alternate is None:
            raise ConfirmationUnavailableError("no alternating timing was given to the local "
                                               "executor", hint="make it with executor_for("
                                               "device, edgekit.validate.validator.HERE)")
        return self.here.alternate(artifacts, device, spec=spec, x=x, rounds=rounds)

    def check(self, device: DeviceProfile) -> list[RuntimeStatus]:
        if self.here.check is None:
            raise NotImplementedError("the local executor was given no runtime check")
        return self.here.check(device)
