"""The local executor: the job runs in this process, on this machine's runtimes."""

from __future__ import annotations

from edgekit.executors.base import Executor, ValidationJob
from edgekit.results.validation import ValidationResult


class LocalExecutor(Executor):
    name = "local"

    def run(self, job: ValidationJob) -> ValidationResult:
        return self.run_here(job)
