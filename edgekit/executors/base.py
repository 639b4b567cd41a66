"""The Executor abstraction: where a validation job runs. `run(job) -> ValidationResult` (its
records, the gate per artifact, the deciding artifact).

The validator builds the job and hands it to an executor; it never talks to SSH (or, later,
Ray) itself. What a job measures is one function, `run_here(job)`, supplied by the validator:
the local executor calls it in this process; the SSH executor has the device's own edgekit run
the same validator there; a Ray executor would send `run_here` to the node that owns the device.
Executors sit below the validator, so they take that function as an argument instead of
importing it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from edgekit.devices import DeviceProfile
from edgekit.errors import InputError
from edgekit.registry import load_modules, suggest
from edgekit.results.validation import ValidationResult

EXECUTORS: dict[str, type[Executor]] = {}


@dataclass(frozen=True)
class ValidationJob:
    """Everything that defines one validation: what (an output folder or one artifact), where
    (the device profile), against what (eval data, budget) and how (batch sizes)."""

    target: Path
    device: DeviceProfile
    eval_source: str
    budget: Any = None  # edgekit.validate.gate.Budget
    batches: list[int] | None = None
    data_dir: str | None = None
    limit: int | None = None
    artifact: str | None = None  # the artifact whose gate decides (--artifact)
    run_id: str | None = None
    rerun: bool = False  # measure again even if the same job already ran (remote executors)


RunHere = Callable[[ValidationJob], ValidationResult]


class Executor:
    """Base class; subclasses set `name` and implement `run`. They register by name."""

    name: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if getattr(cls, "name", None):
            EXECUTORS[cls.name] = cls

    def __init__(self, run_here: RunHere) -> None:
        self.run_here = run_here

    def run(self, job: ValidationJob) -> ValidationResult:
        raise NotImplementedError


def executor_name(device: DeviceProfile) -> str:
    """Which executor a profile asks for: ssh when it names a host, else local."""
    return "ssh" if device.is_remote else "local"


def get_executor(name: str, run_here: RunHere) -> Executor:
    load_modules("edgekit.executors")
    if name not in EXECUTORS:
        raise InputError(f"unknown executor {name!r}", hint=suggest(name, list(EXECUTORS)))
    return EXECUTORS[name](run_here)
