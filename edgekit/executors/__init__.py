"""Executors: where a validation job runs (local: this process; ssh: a device reached over SSH;
a Ray executor for a fleet comes later). The validator talks to an executor only."""

from __future__ import annotations

from edgekit.executors.base import (
    EXECUTORS,
    Executor,
    RunHere,
    ValidationJob,
    executor_name,
    get_executor,
)

__all__ = ["EXECUTORS", "Executor", "RunHere", "ValidationJob", "executor_name", "get_executor"]
