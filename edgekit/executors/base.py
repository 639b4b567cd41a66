"""The Executor abstraction (Olive's `OliveSystem`): where work on a device runs. One interface,
the methods its callers need:

    validate(job)        a ValidationJob -> ValidationResult (records, the gate, the decider)
    alternate(...)       two artifacts timed together in alternating rounds on the device
    check(device)        which of the profile's runtimes the device can use, and why not
    close()              (an executor is a context manager)

local runs them in this process, ssh on the device named by the profile's `host:` (through
edgekit.remote), ray on the node of a Ray cluster that owns the device (edgekit.executors.ray).
`executor_for(device, here, cluster=...)` is the one place that picks; the validator, the fleet,
`edgekit optimize` and the CLI hold an executor and never ask which kind it is. What an executor
raises is an EdgekitError: a device (or the node that owns it) that stops answering is a
`DeviceLostError`, two artifacts that cannot be timed together there a
`ConfirmationUnavailableError`, whatever the transport underneath said.

What a job measures is supplied from above as `Here` (the validator's `run_here(job)` and its
`alternate_here(...)`): the local executor calls them in this process, the SSH executor has the
device's own edgekit run the same code there, the Ray executor sends them to the node. Executors
sit below the validator, so they take these functions instead of importing them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from edgekit.devices import DeviceProfile
from edgekit.errors import EdgekitError, InputError
from edgekit.registry import load_modules, suggest
from edgekit.results.validation import RuntimeStatus, ValidationJob, ValidationResult
from edgekit.runtimes.records import LatencyStats

EXECUTORS: dict[str, type[Executor]] = {}


RunHere = Callable[[ValidationJob], ValidationResult]
# {label: (path, runtime)}, device, spec=, x=, rounds= -> {label: latency statistics with
# `samples_ms` and `round_counts`}: artifacts timed together in alternating rounds, here.
TimeHere = Callable[..., dict[str, LatencyStats]]
Artifacts = dict[str, tuple[Path, str]]


@dataclass(frozen=True)
class Here:
    """The work every executor ends up running, in the process that measures (supplied by the
    validator, edgekit.validate.validator.HERE): validate a job, time artifacts together.
    Module-level functions, so it pickles (the Ray executor sends it to a node)."""

    validate: RunHere
    alternate: TimeHere | None = None
    check: Callable[[DeviceProfile], list[RuntimeStatus]] | None = None


class DeviceLostError(EdgekitError):
    """The device (or the node of the cluster that owns it) stopped answering: the work may be
    retried when it is back. Keeps the exit code of the error it translates, when there is one."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None, *,
                 exit_code: int | None = None, partial_result: Any = None) -> None:
        super().__init__(message, hint)
        if exit_code is not None:
            self.exit_code = exit_code
        self.partial_result = partial_result


class ConfirmationUnavailableError(EdgekitError):
    """Two artifacts cannot be timed together on this device (a winner then stands on the
    interval of its two separate runs)."""

    exit_code = 1


class Executor:
    """Base class; subclasses set `name` and implement `validate` (and `alternate`, `check`
    where they can). The local and SSH executors register by name; the Ray one needs a
    cluster and is made by `executor_for`."""

    name: ClassVar[str] = ""
    # This process times the device's work (so it shares this machine's CPU with whatever else
    # runs here, and the runtimes installed here are the ones that count).
    measures_here: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("name"):
            EXECUTORS[cls.name] = cls

    def __init__(self, here: Here | RunHere) -> None:
        self.here = here if isinstance(here, Here) else Here(here)

    @property
    def run_here(self) -> RunHere:
        return self.here.validate

    # ----------------------------------------------------------------- the interface
    def validate(self, job: ValidationJob) -> ValidationResult:
        """The job's records, the gate per artifact and the deciding artifact."""
        raise NotImplementedError

    def alternate(self, artifacts: Artifacts, device: DeviceProfile, *, spec: Any, x: Any,
                  rounds: int) -> dict[str, LatencyStats]:
        """{label: latency statistics with `samples_ms` and `round_counts`} of `artifacts`
        ({label: (path, runtime)}) timed together on `device`, on `x`, in `rounds` alternating
        rounds with the device's latency protocol (runtimes/speedup.py: `alternate`)."""
        raise ConfirmationUnavailableError(
            f"the {self.name} executor cannot time two artifacts together on {device.name}")

    def check(self, device: DeviceProfile) -> list[RuntimeStatus]:
        """Which of the profile's runtimes the device can use, and why not when it cannot."""
        raise NotImplementedError

    @classmethod
    def builds_on_device(cls, device: DeviceProfile) -> bool:
        """True when TensorRT engines are built on the device inside each validation job (from
        the ONNX model sent with it) rather than exported beforehand."""
        return False

    def close(self) -> None:
        """Free what the executor holds (connections); idempotent."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def executor_name(device: DeviceProfile) -> str:
    """Which registered executor a profile asks for: ssh when it names a host, else local."""
    return "ssh" if device.is_remote else "local"


def get_executor(name: str, here: Here | RunHere) -> Executor:
    """A registered executor by name (local, ssh)."""
    load_modules("edgekit.executors")
    if name not in EXECUTORS:
        raise InputError(f"unknown executor {name!r}", hint=suggest(name, list(EXECUTORS)))
    return EXECUTORS[name](here)


def executor_class(device: DeviceProfile, *, clustered: bool = False) -> type[Executor]:
    """The class `executor_for` picks for `device` (with a Ray cluster when `clustered`)."""
    if clustered:
        from edgekit.executors.ray import RayExecutor

        return RayExecutor
    load_modules("edgekit.executors")
    return EXECUTORS[executor_name(device)]


def executor_for(device: DeviceProfile, here: Here | RunHere, *, cluster: Any = None,
                 resource: str | None = None) -> Executor:
    """The executor that runs work on `device`: the Ray executor on the node that offers
    `resource` (default edgekit-device:<name>) when `cluster` (a `connect_cluster`) is given,
    else the one the profile asks for (local, or ssh for a profile with `host:`). The one place
    that chooses."""
    if cluster is not None:
        from edgekit.executors.ray import RayExecutor

        return RayExecutor(here, cluster, resource or f"edgekit-device:{device.name}")
    return get_executor(executor_name(device), here)


def check_cluster_address(address: str, *, allow_public: bool = False) -> None:
    """Refuse a Ray address that is public (unless allowed) or does not answer, before anything
    runs (edgekit.executors.ray_address.check_address: no Ray import)."""
    from edgekit.executors.ray_address import check_address

    check_address(address, allow_public=allow_public)


def connect_cluster(address: str, resources: list[str], *, allow_public: bool = False,
                    max_retries: int = 2, lost_grace_s: float = 10.0) -> Any:
    """The Ray cluster at `address` (private unless `allow_public`, answering), its nodes that
    offer one of `resources` checked to run this edgekit; a context manager that disconnects.
    Closed again when the check refuses."""
    from edgekit.executors.ray import RayCluster

    cluster = RayCluster(address, allow_public=allow_public, max_retries=max_retries,
                         lost_grace_s=lost_grace_s)
    try:
        cluster.check_versions(resources)
    except BaseException:
        cluster.close()
        raise
    return cluster
