"""Executors: where a validation job runs (local: this process; ssh: a device reached over SSH;
ray: the node of a Ray cluster that owns the device, edgekit/executors/ray.py, made per device
by edgekit/validate/fleet.py). The validator talks to an executor only."""

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
