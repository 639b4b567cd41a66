"""Validate one output folder on a fleet of devices at once (`edgekit validate OUT --device A
--device B ...`, `--fleet FILE`, `--cluster ADDRESS`).

One thread per device, one job per device at a time: devices run concurrently and each device's
job is the same validation `edgekit validate` runs on it alone (local in this process, over SSH,
or as Ray tasks on the node that owns it with `--cluster`). Local profiles share this machine, so
their jobs take turns (a lock per physical device) instead of timing each other; two remote
devices, or remote devices and the local one, run at the same time. A device that fails or drops
is reported with what it finished (a partial remote job keeps its records); the others land.
Every device's records go into the one results store, each device's under its own run id."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edgekit.errors import EdgekitError, InputError
from edgekit.events import carried, emit
from edgekit.executors import Executor, ValidationJob, executor_class
from edgekit.executors import executor_for as pick_executor
from edgekit.fleetfile import FleetDevice, check_unique
from edgekit.results.record import ResultRecord
from edgekit.results.validation import ValidationResult, budget_dict


@dataclass
class DeviceOutcome:
    """What one device of the fleet produced: its result (possibly partial), or why it failed."""

    device: FleetDevice
    result: ValidationResult | None = None
    error: str | None = None
    hint: str | None = None
    seconds: float = 0.0

    @property
    def partial_reason(self) -> str | None:
        r = self.result
        if r is None:
            return None
        reason = getattr(r, "partial_reason", None)
        partial = getattr(r, "partial", bool(reason))
        return reason if partial else None

    @property
    def passed(self) -> bool:
        return self.result is not None and self.error is None and self.result.passed

    @property
    def status(self) -> str:
        if self.result is None:
            return "failed"
        if self.error or self.partial_reason:
            return "partial"
        return "pass" if self.result.passed else "fail"

    def to_json(self) -> dict[str, Any]:
        return {"device": self.device.name, "resource": self.device.resource,
                "node": self.device.node, "physical": self.device.physical,
                "status": self.status, "passed": self.passed, "error": self.error,
                "hint": self.hint, "partial_reason": self.partial_reason,
                "seconds": round(self.seconds, 3),
                "result": self.result.to_json() if self.result else None}


@dataclass
class FleetResult:
    outcomes: list[DeviceOutcome]
    budget: Any
    wall_s: float = 0.0
    stored_ids: list[int] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.outcomes) and all(o.passed for o in self.outcomes)

    @property
    def records(self) -> list[ResultRecord]:
        return [r for o in self.outcomes if o.result for r in o.result.records]

    def store(self, store_path: str | Path) -> list[int]:
        """Every device's records into the one store (each device's result stores once)."""
        ids: list[int] = []
        for o in self.outcomes:
            if o.result is not None and o.result.records:
                ids += o.result.store(store_path)
        self.stored_ids = ids
        return ids

    def to_json(self) -> dict[str, Any]:
        return {"passed": self.passed, "budget": budget_dict(self.budget),
                "wall_s": round(self.wall_s, 3), "stored_ids": self.stored_ids,
                "devices": [o.to_json() for o in self.outcomes]}


ExecutorFor = Callable[[FleetDevice], Executor]


def local_executors(device: FleetDevice) -> Executor:
    """The executor a profile asks for on this workstation (local, or ssh for `host:`)."""
    from edgekit.validate.validator import HERE

    return pick_executor(device.profile, HERE)


def validate_fleet(job: ValidationJob, devices: list[FleetDevice], *,
                   executor_for: ExecutorFor | None = None, share_local: bool = True
                   ) -> FleetResult:
    """Validate `job` (its target, eval data, budget, batches; its device left None) on every
    device at once and collect one outcome per device (in the order given). `executor_for` picks where a device's job runs (default: locally or over SSH;
    the Ray executor with --cluster). `share_local=False` lets local profiles run at the same
    time (only for simulated devices, benchmarks/bench_fleet.py: real ones would disturb each
    other's timing)."""
    from edgekit.io.lineage import check_chain
    from edgekit.validate.gate import Budget

    if not devices:
        raise InputError("no device to validate on", hint="pass --device NAME or --fleet FILE")
    check_unique(devices, "the devices", physical=False)
    check_chain(job.target)
    job = replace(job, target=Path(job.target), budget=job.budget or Budget())
    executor_for = executor_for or local_executors
    locks = device_locks(devices, share_local)

    def one(device: FleetDevice) -> DeviceOutcome:
        outcome = DeviceOutcome(device)
        mine = replace(job, device=device.profile)
        start = time.perf_counter()
        try:
            with executor_for(device) as executor, locks[lock_key(device, share_local)]:
                outcome.result = executor.validate(mine)
        except EdgekitError as exc:
            outcome.error, outcome.hint = exc.message, exc.hint
            outcome.result = getattr(exc, "partial_result", None)
        except Exception as exc:  # noqa: BLE001 - one device's crash must not sink the others
            outcome.error = f"{type(exc).__name__}: {exc}"
        outcome.seconds = time.perf_counter() - start
        emit(f"{device.name}: {outcome.status}" + (f" ({outcome.error})" if outcome.error else ""))
        return outcome

    start = time.perf_counter()
    outcomes = per_device(devices, one)
    return FleetResult(outcomes, job.budget, wall_s=time.perf_counter() - start)


def lock_key(device: FleetDevice, share_local: bool = True) -> str:
    """What a device takes turns on: its physical device (local profiles of this machine share
    one), or with `share_local=False` (a cluster, or simulated devices) its own name."""
    return device.physical if share_local or not executor_class(device.profile).measures_here \
        else device.name


def device_locks(devices: list[FleetDevice], share_local: bool = True
                 ) -> dict[str, threading.RLock]:
    """One lock per `lock_key`: whoever holds it has the device (for a local profile, this
    machine's CPU) to itself. Shared by `edgekit validate` and `edgekit optimize` fleets."""
    return {lock_key(d, share_local): threading.RLock() for d in devices}


def per_device(devices: list[Any], one: Callable[[Any], Any]) -> list[Any]:
    """`one(device)` for every device at once, one thread per device (each with the caller's
    sink of edgekit.events); the answers in order."""
    with ThreadPoolExecutor(max_workers=max(1, len(devices)),
                            thread_name_prefix="edgekit-device") as pool:
        return list(pool.map(carried(one), devices))


def validate_on_cluster(job: ValidationJob, devices: list[FleetDevice], *, address: str,
                        allow_public: bool = False, max_retries: int = 2,
                        lost_grace_s: float = 10.0) -> FleetResult:
    """`validate_fleet` with every device's job run as Ray tasks on the node that owns it. The
    address is checked first (private network unless `allow_public`, answering), then the
    edgekit version of every node that owns a device; a device no node offers is reported
    failed and the rest run."""
    from edgekit.validate.validator import HERE

    check_unique(devices, "the devices", physical=False)
    with connect_cluster(devices, address, allow_public=allow_public, max_retries=max_retries,
                         lost_grace_s=lost_grace_s) as cluster:
        return validate_fleet(job, devices, share_local=False,
                              executor_for=lambda d: pick_executor(
                                  d.profile, HERE, cluster=cluster, resource=d.resource))


def connect_cluster(devices: list[FleetDevice], address: str, *, allow_public: bool = False,
                    max_retries: int = 2, lost_grace_s: float = 10.0) -> Any:
    """The Ray cluster at `address` (private unless `allow_public`, answering), its nodes that
    own one of `devices` checked to run this edgekit; closed again when the check refuses."""
    from edgekit.executors import connect_cluster as connect

    return connect(address, [d.resource for d in devices], allow_public=allow_public,
                   max_retries=max_retries, lost_grace_s=lost_grace_s)
