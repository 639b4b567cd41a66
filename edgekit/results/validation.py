"""What one validation produced, wherever it ran (in this process, over SSH, on a Ray node):
the records, the gate per artifact, which artifact decides the exit code, and how the records
are stored once. Executors return it; the validator and the CLI read it. Plain data, no runtime
and no transport: it sits below both."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from edgekit.data.given import DataSources
from edgekit.results.record import ResultRecord

PRECISION_RANK = {"int4": 0, "int8": 1, "fp16": 2, "bf16": 2, "fp32": 3}


@dataclass(frozen=True)
class ValidationJob:
    """Everything that defines one validation: what (an output folder or one artifact), where
    (the device profile), against what (eval data, budget) and how (batch sizes). Built once
    (edgekit.api.validate, a recipe, a fleet, optimize) and passed through the executors to
    the device."""

    target: Path
    device: Any  # edgekit.devices.DeviceProfile
    data: DataSources = field(default_factory=DataSources)  # eval, eval_limit, data_dir
    budget: Any = None  # edgekit.validate.gate.Budget
    batches: list[int] | None = None
    artifact: str | None = None  # the artifact whose gate decides (--artifact)
    run_id: str | None = None
    rerun: bool = False  # measure again even if the same job already ran (remote executors)

    # The eval data by the names the measuring code reads them (the one DataSources holds them).
    @property
    def eval_source(self) -> str:
        return self.data.eval or ""

    @property
    def data_dir(self) -> str | None:
        return self.data.data_dir

    @property
    def limit(self) -> int | None:
        return self.data.eval_limit


@dataclass
class RuntimeStatus:
    name: str
    usable: bool
    reason: str = ""
    formats: tuple[str, ...] = ()


class RuntimeVerdict(TypedDict):
    """An artifact's gate on one runtime."""

    passed: bool
    reasons: list[str]


class ArtifactVerdict(TypedDict, total=False):
    """One validated artifact: where it is, its gate per runtime and over all of them, and its
    p50 at the smallest batch on its fastest runtime with the speed-up there (what
    pick_decisive compares)."""

    name: str
    relpath: str
    path: str
    stage: str | None
    format: str | None
    precision: str | None
    size_bytes: int | None
    model: str | None
    is_reference: bool
    runtimes: dict[str, RuntimeVerdict]
    passed: bool
    p50_ms: float | None
    speedup: float | None
    fastest_runtime: str | None
    batch: int
    speedup_disturbed: bool


class Decisive(TypedDict, total=False):
    """The artifact whose gate decides the exit code, why it was chosen, and its verdict."""

    artifact: str
    why: str
    passed: bool
    reasons: list[str]


def budget_dict(budget: Any) -> dict[str, float]:
    """A budget (the gate's pydantic Budget, a dict or None) as the dict records carry."""
    if budget is None:
        return {}
    if hasattr(budget, "model_dump"):
        return budget.model_dump(exclude_none=True)
    return {k: v for k, v in dict(budget).items() if v is not None}


def describe_budget(budget: dict[str, float] | None) -> str:
    """A budget's limits in words, e.g. "drop ≤ 1 pt, agreement ≥ 0.98" (the report reads it
    from the dict each gate record carries)."""
    b = budget or {}
    parts = []
    if b.get("max_drop") is not None:
        parts.append(f"drop ≤ {b['max_drop']:g} pt")
    if b.get("max_drop_rel") is not None:
        parts.append(f"drop ≤ {100 * b['max_drop_rel']:g}% of fp32")
    if b.get("min_agreement") is not None:
        parts.append(f"agreement ≥ {b['min_agreement']:g}")
    if b.get("min_cosine") is not None:
        parts.append(f"cosine ≥ {b['min_cosine']:g}")
    if b.get("max_abs_diff") is not None:
        parts.append(f"max |Δ| ≤ {b['max_abs_diff']:g}")
    if b.get("min_speedup") is not None:
        parts.append(f"speed-up ≥ {b['min_speedup']:g}×")
    return ", ".join(parts) or "finite outputs only"


@dataclass
class ValidationResult:
    """All records of one validation, the gate per artifact and which artifact decides.

    `partial_reason` is set when the executor could not finish (a remote job that died or timed
    out): the result is then never a pass. Records that carry a `record_key` (remote jobs) are
    stored record by record, so collecting or resuming the same job never stores twice."""

    device: str
    budget: Any  # edgekit.validate.gate.Budget
    run_id: str
    records: list[ResultRecord] = field(default_factory=list)
    artifacts: list[ArtifactVerdict] = field(default_factory=list)
    runtimes: list[RuntimeStatus] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    decisive: Decisive = field(default_factory=dict)
    # (issue 27) which original the drop is measured against, or why there is none, when the
    # folder's manifest says where its original was (an optimize winner folder)
    reference_note: str | None = None

    @property
    def passed(self) -> bool:
        return bool(self.decisive.get("passed"))

    @property
    def missing_runtimes(self) -> list[RuntimeStatus]:
        return [r for r in self.runtimes if not r.usable]

    def decide(self, requested: str | None, *, partial_reason: str | None = None) -> None:
        """Fill `decisive` from the artifacts' gates (`requested` as --artifact gives it)."""
        if self.artifacts:
            chosen, why = pick_decisive(self.artifacts, requested)
            self.decisive = {"artifact": chosen["name"], "why": why, "passed": chosen["passed"],
                             "reasons": sorted({x for v in chosen["runtimes"].values()
                                                for x in v["reasons"]})}
        else:
            self.decisive = {"artifact": requested or "(none)", "why": "nothing was measured",
                             "passed": False, "reasons": []}
        if partial_reason:
            self.decisive["passed"] = False
            self.decisive["reasons"] = [*self.decisive["reasons"],
                                        f"partial result: {partial_reason}"]

    def to_json(self, *, with_samples: bool = False) -> dict[str, Any]:
        records = self.records
        if not with_samples:
            records = [{**r, "latency": {k: v for k, v in r.get("latency", {}).items()
                                         if k != "samples_ms"}} for r in records]
        return {
            "device": self.device, "run_id": self.run_id, "passed": self.passed,
            "budget": budget_dict(self.budget), "decisive": self.decisive,
            "artifacts": self.artifacts,
            "runtimes": [vars(r) for r in self.runtimes],
            "skipped": self.skipped, "records": records,
            **({"reference_note": self.reference_note} if self.reference_note else {}),
        }

    def store(self, store_path: str | Path) -> list[int]:
        """Append the records to the results store (all or none), once: a run already stored
        is not stored again; keyed records (remote jobs) are added when their key is new."""
        from edgekit.results.store import open_store

        with open_store(store_path) as store:
            if any(r.get("record_key") for r in self.records):
                have = {r.get("record_key") for r in store.records(run_id=self.run_id)}
                new = [r for r in self.records if r.get("record_key") not in have]
                return store.add(new, run_id=self.run_id) if new else []
            if store.has_run(self.run_id):
                return []
            return store.add(self.records, run_id=self.run_id)


def fastest_p50(artifact: ArtifactVerdict) -> float:
    """An artifact's p50 at its smallest measured batch on its fastest runtime (inf if none)."""
    value = artifact.get("p50_ms")
    return float(value) if value is not None else float("inf")


def pick_decisive(artifacts: list[ArtifactVerdict], requested: str | None = None
                  ) -> tuple[ArtifactVerdict, str]:
    """The artifact whose gate decides the exit code, and why it was chosen.

    `requested` matches an artifact's file name, relative path or stage. By default: the
    fastest artifact (`p50_ms`: smallest batch, fastest runtime) among those that pass their
    gate, leaving out the fp32 original the others are measured against (`is_reference`) unless
    it is all there is. When none passes (or none says how fast it ran), the most compressed one
    decides (lowest precision, then the last one made, then the smallest file)."""
    from edgekit.errors import InputError
    from edgekit.runtimes.interference import disturbed_suffix

    if not artifacts:
        raise InputError("there is no artifact to decide on")
    if requested:
        hits = [a for a in artifacts if requested in (a.get("name"), a.get("relpath"),
                                                     a.get("stage"), str(a.get("path")))]
        if not hits:
            names = ", ".join(sorted({str(a.get("name")) for a in artifacts}))
            raise InputError(f"--artifact {requested!r} is not among the validated artifacts",
                             hint=f"choose one of: {names}")
        return hits[-1], f"chosen with --artifact {requested}"
    pool = [a for a in artifacts if not a.get("is_reference")] or list(artifacts)
    passing = [a for a in pool if a.get("passed")]
    if any(a.get("p50_ms") is not None for a in passing):  # (records of an older edgekit
        # on a remote device carry no latency summary: the most compressed one decides)
        chosen = min(passing, key=fastest_p50)
        p50 = chosen.get("p50_ms")
        at = f", p50 {p50:.3f} ms" if p50 is not None else ""
        speed = chosen.get("speedup")
        vs = f", {speed:.2f}× the original" if speed else ""
        if speed:  # (issue 18) never without the mark
            vs += disturbed_suffix(chosen.get("speedup_disturbed"))
        return chosen, f"the fastest artifact within the budget{at}{vs}"
    order = sorted(range(len(pool)), key=lambda i: (
        PRECISION_RANK.get(pool[i].get("precision", "fp32"), 3), -i,
        pool[i].get("size_bytes") or 0))
    chosen = pool[order[0]]
    lead = "no artifact meets the budget; " if not passing else ""
    return chosen, (f"{lead}the most compressed artifact ({chosen.get('precision', 'fp32')}, "
                    "latest stage); pass --artifact NAME to choose another")

