"""The SSH executor: the job runs on the device named by the profile's `host:`, through
`edgekit.remote` (content-addressed copies, the device-side agent, a detached job that a rerun
collects instead of measuring twice). The device runs the same validator as `edgekit validate`;
the records come back tagged with the device's environment and a record key, so storing them
again adds nothing."""

from __future__ import annotations

from edgekit.errors import MissingDependencyError
from edgekit.executors.base import Executor, ValidationJob
from edgekit.results.validation import ValidationResult


class SSHExecutor(Executor):
    name = "ssh"

    def run(self, job: ValidationJob) -> ValidationResult:
        device = job.device
        try:
            from edgekit.remote import validate_remote
        except ImportError as exc:
            raise MissingDependencyError(
                f"device {device.name} is remote (host {device.host}), and remote validation is "
                f"not available in this edgekit ({exc})",
                hint="use a local profile, or install an edgekit with edgekit.remote") from None
        # run_id as given: edgekit.remote derives one from its job id if None.
        return validate_remote(job.target, device, eval_source=job.eval_source,
                               budget=job.budget, batches=job.batches, data_dir=job.data_dir,
                               limit=job.limit, artifact=job.artifact, run_id=job.run_id,
                               rerun=job.rerun)
