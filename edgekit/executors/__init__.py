"""Executors: where work on a device runs (local: this process; ssh: a device reached over SSH;
ray: the node of a Ray cluster that owns the device). `executor_for` picks one; callers hold it
and use its interface (validate, alternate, check, close), never edgekit.remote or Ray."""

from __future__ import annotations

from edgekit.executors.base import (
    EXECUTORS,
    ConfirmationUnavailableError,
    DeviceLostError,
    Executor,
    Here,
    RunHere,
    ValidationJob,
    check_cluster_address,
    connect_cluster,
    executor_class,
    executor_for,
    executor_name,
    get_executor,
)

__all__ = ["EXECUTORS", "ConfirmationUnavailableError", "DeviceLostError", "Executor", "Here",
           "RunHere", "ValidationJob", "check_cluster_address", "connect_cluster",
           "executor_class", "executor_for", "executor_name", "get_executor"]
