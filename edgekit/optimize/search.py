"""`edgekit optimize`: per device, an Optuna study over the search space, decided by the
milliseconds and the top-1 measured on that device.

Per device:
  1. the fp32 original is measured on every runtime of the space (the baselines); the fastest
     sets the bar a winner must clear (min_speedup, 1.0 by default: never slower than that);
  2. Optuna (multi-objective: p50 latency down, top-1 up; SQLite storage in the output folder,
     so a killed study resumes and several workers can share it) proposes candidates;
  3. a candidate that changes the architecture is first exported and timed undistilled (latency
     does not depend on the weights); it is distilled only if it can still win (not slower than
     the original beyond the noise, and not a mere tie with it, which the simpler original
     wins) and still enter the front — briefly first, fully only if the short result is within
     `promote_margin` points of entering the front (successive halving);
  4. the winner is the fastest candidate within the accuracy budget that is not slower than the
     original's fastest runtime beyond the noise (a speed-up interval from the samples,
     runtimes/speedup.py); a tie within the noise goes to the simpler artifact; the winner is
     timed again with the original in alternating rounds on its device (a remote one included)
     before it is chosen. It
     is copied into out/<device>/ with a manifest that says what was tried, what each candidate
     cost and measured, and why the winner won.
Every export and measurement is cached (edgekit.optimize.cache), so a rerun measures nothing twice.

Devices are searched at once, one thread per device (edgekit.validate.fleet's scheduling, as
`edgekit validate --device A --device B`): a local profile's measurements hold this machine's
lock, which the builds (exports, distillation, quantization, all on this machine) hold too, so
nothing is timed while something else runs here; a remote device measures while this machine
builds. A device that fails mid-search keeps its partial front; the others finish. With
`cluster` (a Ray address), every measurement runs through the Ray executor on the node that owns
the device (edgekit-device:<name>), its files through the object store by sha256.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.errors import ConfigError, EdgekitError, InputError, MissingDependencyError
from edgekit.io.files import atomic_write_json, sha256_file
from edgekit.io.manifest import Manifest
from edgekit.kinds import default_runtime
from edgekit.optimize.build import Arch, Builder, UnchangedError, portable
from edgekit.optimize.cache import CandidateCache, device_state, digest
from edgekit.optimize.measure import (
    ConfirmationUnavailableError,
    DeviceLostError,
    alternate_on_device,
    measure_on_device,
)
from edgekit.optimize.space import OptimizeSettings, original_params, parse_duration
from edgekit.optimize.trials import (
    STUDY_DB,
    candidate_name,
    candidates_of,
    check_study,
    choose,
    dominated,
    front_points,
    params_key,
    pareto,
    plot_label,
    prefer_simpler,
)
from edgekit.progress import tagged

_say = tagged("optimize")


def import_optuna():
    try:
        import optuna
    except ImportError:
        raise MissingDependencyError("edgekit optimize needs Optuna",
                                     hint="pip install 'edgekit[optimize]'") from None
    import warnings

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # BruteForceSampler and the heartbeat are marked experimental; both are what we want.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


@dataclass
class DeviceSearch:
    """One device's search: what it can run, its baselines, its trials' outcomes."""

    device: Any
    targets: list[str]
    batch: int
    state: dict[str, Any]
    baselines: dict[str, dict[str, Any]] = field(default_factory=dict)  # runtime -> candidate
    unusable: dict[str, str] = field(default_factory=dict)  # runtime or target -> why not
    lost: str | None = None
    seconds: float = 0.0
    fleet: Any = None  # its FleetDevice (name, Ray resource, node)
    executor: Any = None  # where its work runs (edgekit.executors.executor_for), set by the run
    here: bool = True  # this process times its candidates (the executor's `measures_here`)
    space: Any = None  # the space fitted to the model and this device (optimize/adapt.py)
    dropped: list[dict[str, Any]] = field(default_factory=list)  # knobs dropped: {knob, value, why}
    notes: list[str] = field(default_factory=list)  # e.g. layers round_to keeps whole
    inapplicable: dict[tuple[str, str], str] = field(default_factory=dict)  # knob found a no-op

    @property
    def measured_here(self) -> bool:
        """True when this process times the device's candidates (a local profile, no cluster)."""
        return self.here

    @property
    def fastest_fp32_ms(self) -> float:
        return min(c["p50_ms"] for c in self.baselines.values())

    @property
    def fastest_baseline(self) -> dict[str, Any]:
        return min(self.baselines.values(), key=lambda c: c["p50_ms"])

    @property
    def reference_top1(self) -> float:
        """The original's top-1 (fp32 ONNX on ONNX Runtime where the space has it)."""
        first = self.baselines.get(default_runtime("onnx")) or next(iter(self.baselines.values()))
        return first["top1"]


def minimum_seconds(searches: list[DeviceSearch]) -> float:
    """The least time in which every device can measure its baselines and one candidate: each
    measurement runs the protocol's warm-up and its minimum timing span."""
    total = 0.0
    for s in searches:
        per = s.device.latency.warmup_seconds + s.device.latency.min_seconds
        runtimes = {t.split(":")[0] for t in s.targets}
        total += per * (len(runtimes) + 1)
    return total


def usable_targets(device: Any, targets: list[str], *, here: bool | None = None
                   ) -> tuple[list[str], list[str]]:
    """Targets whose runtime can run here. A device measured elsewhere (`here=False`: on the
    device itself, or on a cluster node; by default as its executor says): all of them, checked
    there; TensorRT engines are built on the device from each candidate's ONNX model (the
    remote path's build step), and a device without TensorRT or a GPU says so at the first one."""
    if here is None:
        from edgekit.executors import executor_class

        here = executor_class(device).measures_here
    if not here:
        return list(targets), []
    from edgekit.validate.validator import runtime_status

    status = {s.name: s for s in runtime_status(device)}
    ok = [t for t in targets if status.get(t.split(":")[0]) and status[t.split(":")[0]].usable]
    missing = sorted({f"{s.name}: {s.reason}" for s in status.values() if not s.usable})
    return ok, missing


class Optimizer:
    """One `edgekit optimize` run over one model and several devices."""

    def __init__(self, checkpoint: str | Path, devices: list[Any], settings: OptimizeSettings, *,
                 out_dir: str | Path, eval_source: str, max_drop: float = 1.0,
                 train_source: str | None = None, calib_source: str | None = None,
                 eval_limit: int | None = None, data_dir: str | None = None,
                 bundle: Any = None, on_event: Callable[[str], None] = _say,
                 cluster: str | None = None, allow_public_cluster: bool = False,
                 train: Any = None) -> None:
        from edgekit.fleetfile import FleetDevice, fleet_device
        from edgekit.validate.fleet import device_locks
        from edgekit.zoo.accel import train_settings

        self.checkpoint = Path(checkpoint)
        # profiles or fleet devices (--fleet): each with its Ray resource and node
        self.fleet = [d if isinstance(d, FleetDevice) else fleet_device(d) for d in devices]
        self.devices = [d.profile for d in self.fleet]
        self.cluster = cluster
        self.allow_public_cluster = allow_public_cluster
        # who has a device to itself (validate/fleet.py's locks); the builds run on this
        # machine's CPU, so they hold this machine's lock, which local profiles measure under
        # (whatever node a fleet file names for them: without a cluster they run here)
        self._locks = device_locks(self.fleet, share_local=cluster is None)
        self._machine_lock = threading.RLock()
        self.settings = settings
        self.space = settings.space()
        self.out = Path(out_dir)
        self.eval_source = eval_source
        self.max_drop = max_drop
        self.train_source = train_source
        self.calib_source = calib_source
        self.eval_limit = eval_limit
        self.data_dir = data_dir
        self.bundle = bundle
        self.train = train_settings(train)  # where distillation trains (TrainSettings)
        self.say = on_event
        self.cache = CandidateCache(self.out / "cache")
        self._storage: Any = None  # the Optuna study storage, shared by the devices' threads
        self._spent = threading.local()  # per device thread: its builds' seconds

    # ------------------------------------------------------------------ checks
    # What optimize writes at the top of -o itself: no device's folder may take one of them.
    OWN_ENTRIES = ("manifest.json", "optimize.json", "report.html", "report.md", "cache",
                   "candidates", STUDY_DB)

    def device_folder(self, name: str) -> Path:
        """OUT/<device>: checked to be a folder of its own inside -o wherever the name came
        from (a profile, a fleet file, a DeviceProfile built in Python), with the resolver every
        output path goes through (io/outputs.check_inside)."""
        from edgekit.io.outputs import check_inside

        hint = "rename the device (letters, digits, '.', '_' and '-'), e.g. `name: orin-1`"
        if name in self.OWN_ENTRIES:
            raise InputError(f"device name {name!r} is a file optimize writes in {self.out}",
                             hint=hint)
        return check_inside(name, self.out, "device name", hint=hint)

    def _check_outputs(self) -> None:
        """-o is a folder edgekit owns (never a user's folder, never the model's own), no
        output replaces an input, each device's folder stays inside -o, and the candidates an
        earlier run left are still the files it recorded (sha256)."""
        from edgekit.data.paths import source_paths
        from edgekit.io.lineage import check_recorded
        from edgekit.io.outputs import check_output_folder, check_outputs

        check_output_folder(self.out)
        for device in self.fleet:
            self.device_folder(device.name)
        planned = [self.out / name for name in self.OWN_ENTRIES] + \
            [self.out / d.name / "manifest.json" for d in self.fleet]
        check_outputs({"-o": [self.out, *planned]},
                      {"the model": self.checkpoint,
                       "--eval data": source_paths(self.eval_source, self.data_dir),
                       "--train data": source_paths(self.train_source, self.data_dir),
                       "--calib set": source_paths(self.calib_source, self.data_dir)})
        candidates = self.out / "candidates"
        if candidates.is_dir():
            for manifest in sorted(candidates.rglob("manifest.json")):
                check_recorded(manifest.parent,
                               hint=f"remove {manifest.parent} (optimize builds it again) or "
                                    "optimize into a new -o")

    def check(self) -> list[DeviceSearch]:
        """Everything that can be refused before any work (exit 2)."""
        if self.out.exists() and not self.out.is_dir():
            raise InputError(f"output {self.out} exists and is not a folder", hint="-o names a folder")
        check_study(self.out)  # a damaged study: exit 2 with the way out, not a lost search
        import math

        if isinstance(self.max_drop, bool) or not isinstance(self.max_drop, int | float) \
                or not math.isfinite(self.max_drop):
            raise InputError(f"--max-drop {str(self.max_drop)[:40]} is not a finite number",
                             hint="the allowed top-1 drop in points, e.g. --max-drop 1.0")
        if self.max_drop < 0:
            raise InputError(f"--max-drop {self.max_drop:g} is negative",
                             hint="the allowed top-1 drop in points, e.g. --max-drop 1.0")
        if self.space.needs_training() and not self.train_source:
            raise InputError("the search space prunes or substitutes layers, which needs "
                             "distillation, and no training data was given",
                             hint="pass --train fashion-mnist:train, or search precisions only "
                                  "(--prune 0 --dwsep off)")
        names = [d.name for d in self.devices]
        if len(set(names)) != len(names):
            raise InputError(f"device {next(n for n in names if names.count(n) > 1)!r} is named "
                             "twice", hint="give each --device once")
        from edgekit.executors import executor_class
        from edgekit.fleetfile import check_unique

        check_unique(self.fleet, "the devices", physical=False)  # (a Ray resource twice)
        self._check_outputs()
        searches = []
        for fleet_device in self.fleet:
            device = fleet_device.profile
            targets = self.space.targets(device)
            if not targets:
                raise InputError(f"no runtime and precision of the space is on {device.name} "
                                 f"(it lists {', '.join(device.runtimes)})",
                                 hint="widen --runtimes/--precisions, or pick another --device")
            from edgekit.optimize.adapt import buildable_targets

            targets, unmade = buildable_targets(targets)
            dropped = [{"knob": "target", "value": t, "why": why} for t, why in unmade.items()]
            if not targets:
                raise InputError(f"optimize can make no artifact for the runtime and precision "
                                 f"pairs of the space on {device.name} "
                                 f"({'; '.join(f'{t}: {w}' for t, w in unmade.items())})",
                                 hint="widen --runtimes/--precisions, or pick another --device")
            here = executor_class(device, clustered=self.cluster is not None).measures_here
            ok, missing = usable_targets(device, targets, here=here)
            if not ok:  # (measured elsewhere, every target is kept and checked there)
                raise MissingDependencyError(
                    f"none of {device.name}'s runtimes can run here ({'; '.join(missing)}), and "
                    "the profile has no host to measure on",
                    hint="install the runtime, or add `host: user@device` to the profile")
            if not any(t.endswith(":fp32") for t in ok):
                raise InputError(f"{device.name}: the space has no fp32 target, so there is no "
                                 "original to compare with",
                                 hint="keep fp32 in --precisions")
            for gone in sorted(set(targets) - set(ok)):
                self.say(f"{device.name}: {gone} skipped ({'; '.join(missing)})")
                dropped.append({"knob": "target", "value": gone, "why": "; ".join(missing)})
            for d in dropped[:len(unmade)]:
                self.say(f"{device.name}: {d['value']} dropped from the space: {d['why']}")
            batch = self.space.batch or min(device.batch_sizes)
            searches.append(DeviceSearch(device, ok, batch, device_state(device),
                                         fleet=fleet_device, here=here, space=self.space,
                                         dropped=dropped))
        if self.settings.time_budget is not None:
            budget = parse_duration(self.settings.time_budget)
            need = minimum_seconds(searches)
            if budget < need:
                raise InputError(f"a time budget of {self.settings.time_budget} is too small for "
                                 f"one candidate: the baselines and one candidate need at least "
                                 f"{need:.0f} s of timing on {', '.join(names)}",
                                 hint=f"give --time-budget {max(1, int(need + 0.999))}s or more")
        import_optuna()
        return searches

    # ------------------------------------------------------------------ the run
    def run(self) -> dict[str, Any]:
        searches = self.check()
        started = time.monotonic()
        budget = parse_duration(self.settings.time_budget) if self.settings.time_budget else None
        from edgekit.io.outputs import claim_output_folder

        claim_output_folder(self.out)  # edgekit's folder (its manifest first), as compress's
        self._prepare()
        self._fit(searches)
        import contextlib

        from edgekit.validate.fleet import connect_cluster

        with connect_cluster(self.fleet, self.cluster, allow_public=self.allow_public_cluster) \
                if self.cluster is not None else contextlib.nullcontext() as cluster:
            results = self._search_all(searches, budget, started, cluster)
        summary = {"model": self.bundle.name, "checkpoint": str(self.checkpoint),
                   "out": str(self.out), "max_drop": self.max_drop,
                   "min_speedup": self.settings.min_speedup,
                   "space": self.space.model_dump(mode="json"),
                   "devices": results, "cache": self.cache.summary(),
                   "seconds": round(time.monotonic() - started, 1),
                   "passed": all(r.get("winner") and not r.get("lost")
                                 for r in results.values())}
        summary["report"] = self._report(results)
        atomic_write_json(self.out / "optimize.json", summary)
        return summary

    def _search_all(self, searches: list[DeviceSearch], budget: float | None, started: float,
                    cluster: Any) -> dict[str, dict[str, Any]]:
        """Every device's search at once (validate/fleet.py's one thread per device), each
        within the whole time budget; a device whose search fails keeps its partial front."""
        from edgekit.executors import executor_for
        from edgekit.validate.fleet import per_device
        from edgekit.validate.validator import HERE

        def one(search: DeviceSearch) -> dict[str, Any]:
            left = None if budget is None else budget - (time.monotonic() - started)
            with executor_for(search.device, HERE, cluster=cluster,
                              resource=search.fleet.resource, on_event=self.say) as executor:
                search.executor = executor
                return self._search_or_keep(search, left, started)

        return dict(zip([s.device.name for s in searches], per_device(searches, one),
                        strict=True))

    def _search_or_keep(self, search: DeviceSearch, left: float | None,
                        started: float) -> dict[str, Any]:
        """The device's search; when it fails, what it finished (its partial front)."""
        try:
            return self._search(search, left)
        except Exception as exc:  # noqa: BLE001 - one device's failure must not sink the others
            message = exc.message if isinstance(exc, EdgekitError) else \
                f"{type(exc).__name__}: {exc}"
            search.lost = message
            self.say(f"{search.device.name}: the search stopped: {message}")
            try:  # what it finished: its partial front (and a winner among it)
                return self._finish(search, self._partial_study(search),
                                    time.monotonic() - started)
            except Exception:  # noqa: BLE001 - the device's own failure is the news
                return self._finish(search, None, time.monotonic() - started)

    def _partial_study(self, search: DeviceSearch) -> Any:
        """The device's study as far as it got (None when there is none yet)."""
        if not search.baselines:
            return None
        try:
            return self._study(search)[0]
        except Exception:  # noqa: BLE001 - the failure being reported matters, not this one
            return None

    def _prepare(self) -> None:
        from edgekit.data import load_dataset
        from edgekit.io.models import load_model

        if self.bundle is None:
            self.bundle = load_model(self.checkpoint)
        spec = self.bundle.spec
        self.eval_set = load_dataset(self.eval_source, spec, data_dir=self.data_dir,
                                     limit=self.eval_limit)
        self.eval_set.check_for(spec, need_labels=True)
        self.eval_key = digest(self.eval_source, self.eval_limit, spec.to_json())
        self.builder = Builder(self.bundle, sha256_file(self.checkpoint), self.out, self.space,
                               train_source=self.train_source, calib_source=self.calib_source,
                               data_dir=self.data_dir, parity_x=self.eval_set.x[:256],
                               seed=self.settings.seed, train=self.train)
        self._ref_logits = None

    def _fit(self, searches: list[DeviceSearch]) -> None:
        """Fit each device's space to the model before any candidate is built (adapt.py): a
        pruning ratio or dwsep choice that cannot apply is dropped, said once, with its reason.
        Devices with the same round_to share the answer."""
        from edgekit.optimize.adapt import fit_space

        fitted: dict[Any, Any] = {}
        for search in searches:
            round_to = search.device.round_to
            if round_to not in fitted:
                with self._machine_lock:
                    fitted[round_to] = fit_space(self.space, self.builder, round_to)
                for d in fitted[round_to].dropped:
                    self.say(f"{d['knob']} {d['value']} dropped from the space: {d['why']}")
                for note in fitted[round_to].notes:
                    self.say(note)
            search.space = fitted[round_to].space
            search.dropped = [*fitted[round_to].dropped, *search.dropped]
            search.notes = list(fitted[round_to].notes)

    def _reference_logits(self):
        """The original's fp32 logits on ONNX Runtime here (fidelity of every local record)."""
        with self._machine_lock:  # timed nowhere, but runs on this machine's CPU
            before = dict(self.builder.seconds)
            logits = self._reference_logits_here()
            self._count_built(before)
            return logits

    def _reference_logits_here(self):
        if self._ref_logits is None:
            from edgekit.devices import default_cpu_profile
            from edgekit.validate.bench import reference_logits
            from edgekit.validate.validator import check_labels

            onnx_path = self.builder.fp32_onnx(Arch(), "original", None)
            self._ref_logits = reference_logits(onnx_path, self.eval_set, default_cpu_profile(),
                                                self.bundle.spec)
            check_labels(self.eval_set, self._ref_logits.shape[1], self.eval_source)
        return self._ref_logits

    # ------------------------------------------------------------------ one candidate
    def _measure(self, search: DeviceSearch, arch: Arch, stage: str, target: str,
                 fallback: str) -> dict[str, Any]:
        """Build (or find) the artifact and measure it (or find its measurement): a candidate
        summary with the record's key in the cache."""
        device = search.device
        runtime = target.split(":")[0]
        if fallback == "latency" and not search.measured_here:
            raise ConfigError(f"the int8 fallback set 'latency' profiles layers here, and "
                              f"{device.name} is a remote device",
                              hint="leave 'latency' out of int8_fallback for remote devices")
        from edgekit.devices import profile_ref

        with self._machine_lock:
            before = dict(self.builder.seconds)
            entry = self.builder.artifact(arch, stage, target, fallback, device.round_to,
                                          profile_ref(device),
                                          build_on_device=search.executor.builds_on_device(device))
            self._count_built(before)
        built_there = entry.get("build_on_device")  # an engine built from this ONNX model there
        key = self.cache.measurement_key(entry["path"], search.state,
                                         f"{runtime}:{built_there}" if built_there else runtime,
                                         search.batch, self.eval_key)
        record = self.cache.get(key)
        cached = record is not None
        measure_s = 0.0
        if record is None:
            ref_logits = self._reference_logits() if search.measured_here else None
            with self._device_lock(search):
                start = time.perf_counter()
                record = measure_on_device(
                    entry, device, runtime, spec=self.bundle.spec, batch=search.batch,
                    eval_set=self.eval_set, ref_logits=ref_logits, eval_source=self.eval_source,
                    eval_limit=self.eval_limit, data_dir=self.data_dir, executor=search.executor)
            measure_s = time.perf_counter() - start
            record["optimize"] = {"arch": arch.label, "stage": stage, "target": target,
                                  "fallback": fallback, "float_layers": entry["float_layers"]}
            self.cache.put(key, record)
        return {"key": key, "cached": cached, "artifact": str(entry["path"]),
                "stage": stage, "target": target,
                "p50_ms": record["latency"]["p50_ms"],
                "disturbed": record["latency"].get("disturbed"),  # (issue 18)
                "top1": record["accuracy"]["top1"], "measure_s": round(measure_s, 3),
                "float_layers": entry["float_layers"]}

    def _built_seconds(self) -> dict[str, float]:
        """The build and distillation seconds spent for this thread's device so far (the
        builder's totals mix every device's, which build in turns)."""
        if not hasattr(self._spent, "seconds"):
            self._spent.seconds = {}
        return self._spent.seconds

    def _count_built(self, before: dict[str, float]) -> None:
        """Add what the builder spent since `before` to this thread's device (called under the
        machine lock, so nobody else's builds are in between)."""
        spent = self._built_seconds()
        for k, v in self.builder.seconds.items():
            spent[k] = spent.get(k, 0.0) + v - before.get(k, 0.0)

    def _device_lock(self, search: DeviceSearch) -> Any:
        """The lock that gives the device to one measurement at a time (validate/fleet.py's)."""
        from edgekit.validate.fleet import lock_key

        if search.measured_here:  # this machine's CPU, shared with the builds
            return self._machine_lock
        return self._locks[lock_key(search.fleet, self.cluster is None)]

    def _baselines(self, search: DeviceSearch) -> None:
        for runtime in dict.fromkeys(t.split(":")[0] for t in search.targets):
            if f"{runtime}:fp32" not in search.targets:
                continue
            search.baselines[runtime] = self._measure(search, Arch(), "original",
                                                      f"{runtime}:fp32", "none")
        described = ", ".join(f"{r} {c['p50_ms']:.3f} ms" for r, c in search.baselines.items())
        self.say(f"{search.device.name}: the fp32 original runs in {described}")

    def _evaluate(self, search: DeviceSearch, params: dict[str, Any],
                  front: list[tuple[float, float]]) -> dict[str, Any]:
        """A candidate's outcome: {'values': (p50, top1 %) | None, 'status', 'why', 'steps'}."""
        arch = Arch.of(params)
        target, fallback = params["target"], params.get("fallback", "none")
        bar = search.fastest_fp32_ms / self.settings.min_speedup
        ref = 100 * search.reference_top1
        steps = []
        if not arch.changed:
            steps.append(self._measure(search, arch, "original", target, fallback))
            return {"status": "measured", "steps": steps, "why": "the original's weights",
                    "values": (steps[-1]["p50_ms"], 100 * steps[-1]["top1"])}
        screen = self._measure(search, arch, "init", target, fallback)
        steps.append(screen)
        latency = screen["p50_ms"]
        from edgekit.runtimes.speedup import describe

        iv = self._interval(search, screen["key"], search.fastest_baseline["key"],
                            self.settings.min_speedup)
        if (iv["verdict"] == "slower") if iv else latency > bar:
            numbers = f" ({describe(iv)})" if iv else ""
            return {"status": "too slow", "steps": steps, "values": None,
                    "why": f"{latency:.3f} ms undistilled, slower than the original's "
                           f"{search.fastest_fp32_ms:.3f} ms{numbers}: not distilled"}
        if iv and self.settings.min_speedup <= 1.0 and iv["ci_low"] <= 1.0:
            # latency does not depend on the weights, and a tie within the noise goes to the
            # simpler artifact: the original would win against it, distilled or not
            return {"status": "tie", "steps": steps, "values": None,
                    "why": f"{latency:.3f} ms undistilled against the original's "
                           f"{search.fastest_fp32_ms:.3f} ms ({describe(iv)}): a tie within the "
                           "noise, which the simpler original wins; not distilled"}
        if dominated((latency, ref), front):
            return {"status": "dominated", "steps": steps, "values": None,
                    "why": f"at {latency:.3f} ms even the original's top-1 ({ref:.2f}%) would "
                           "not enter the front: not distilled"}
        short = self._measure(search, arch, "short", target, fallback)
        steps.append(short)
        result = {"status": "short", "steps": steps,
                  "values": (short["p50_ms"], 100 * short["top1"]),
                  "why": "short distillation only"}
        margin = search.space.distill.promote_margin
        top1 = 100 * short["top1"]
        if not search.space.distill.has_full:
            result["why"] = "distilled (the short and full schedules are the same)"
            return result
        if top1 + margin < ref - self.max_drop:
            result["why"] = (f"short distillation reached {top1:.2f}%, more than {margin:g} "
                             f"points under the budget ({ref - self.max_drop:.2f}%): not "
                             "promoted")
            return result
        if dominated((short["p50_ms"], top1 + margin), front):
            result["why"] = (f"short distillation reached {top1:.2f}%; {margin:g} more points "
                             "would still not enter the front: not promoted")
            return result
        full = self._measure(search, arch, "full", target, fallback)
        steps.append(full)
        return {"status": "full", "steps": steps, "why": "promoted to the full distillation",
                "values": (full["p50_ms"], 100 * full["top1"])}

    # ------------------------------------------------------------------ one device
    def _study(self, search: DeviceSearch):
        optuna = import_optuna()
        with self._machine_lock:  # one storage for every device's study (it makes the tables)
            if self._storage is None:
                self._storage = optuna.storages.RDBStorage(
                    f"sqlite:///{(self.out / STUDY_DB).resolve()}", heartbeat_interval=30,
                    grace_period=120,  # several devices' trials write at once: wait a turn
                    engine_kwargs={"connect_args": {"timeout": 60}})
        storage = self._storage
        name = f"{search.device.name}-{digest(search.space.model_dump(mode='json'), self.max_drop, self.settings.min_speedup, search.state, search.batch, self.eval_key, self.builder.checkpoint_sha)}"
        size = search.space.size(search.targets)
        from optuna.trial import TrialState

        # A trial killed mid-way (kill -9) holds only the params it had suggested, and the
        # brute-force sampler's tree then refuses the study ("param_name mismatch"): a resumed
        # study with failed or dead trials is sampled by TPE (its failed candidates are queued
        # again by _fail_dead_trials, and finished work is a cache hit).
        known = {summary.study_name for summary in optuna.get_all_study_summaries(storage)}
        interrupted = name in known and bool(optuna.load_study(
            study_name=name, storage=storage).get_trials(
                deepcopy=False, states=(TrialState.FAIL, TrialState.RUNNING)))
        sampler = optuna.samplers.BruteForceSampler(seed=self.settings.seed) \
            if size <= self.settings.trials and not interrupted else \
            optuna.samplers.TPESampler(seed=self.settings.seed, multivariate=True)
        study = optuna.create_study(storage=storage, study_name=name, sampler=sampler,
                                    directions=["minimize", "maximize"], load_if_exists=True)
        self._fail_dead_trials(study, storage)
        return study, storage

    @staticmethod
    def _fail_dead_trials(study: Any, storage: Any) -> None:
        """A trial left RUNNING by a process of this host that no longer exists (killed) is
        marked failed, so the sampler proposes its candidate again (its finished exports and
        measurements are cache hits). Other hosts' trials are left to Optuna's heartbeat."""
        from optuna.trial import TrialState

        host = socket.gethostname()
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker = str(trial.user_attrs.get("worker", ""))
            if not worker.startswith(host + ":"):
                continue
            pid = int(worker.rsplit(":", 1)[1])
            try:
                os.kill(pid, 0)
                alive = pid != os.getpid()
            except ProcessLookupError:
                alive = False
            except PermissionError:
                alive = True
            if not alive:
                storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        # Candidates whose trial failed (killed, device lost) and that no finished or waiting
        # trial covers are queued again: samplers count failed trials as tried.
        covered = {params_key(t.params) for t in study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.WAITING,
                                    TrialState.RUNNING))}
        for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
            key = params_key(trial.params)
            if trial.params and key not in covered:
                study.enqueue_trial(dict(trial.params))
                covered.add(key)

    def _search(self, search: DeviceSearch, seconds: float | None) -> dict[str, Any]:
        optuna = import_optuna()
        from optuna.trial import TrialState

        device = search.device
        started = time.monotonic()
        deadline = None if seconds is None else started + seconds
        self.say(f"{device.name}: {len(search.targets)} runtime/precision pairs, space of "
                 f"{search.space.size(search.targets)} candidates, {self.settings.trials} trials"
                 + (f", {seconds:.0f} s" if seconds is not None else ""))
        try:
            self._baselines(search)
        except DeviceLostError as exc:
            search.lost = exc.message
            return self._finish(search, None, time.monotonic() - started)
        study, _ = self._study(search)
        if not study.trials:  # the originals are candidates: enqueue them first, then the
            # original at every other precision (no training needed: cheap, and the anchors a
            # compressed candidate has to beat)
            for runtime in search.baselines:
                study.enqueue_trial({**original_params(), "target": f"{runtime}:fp32"})
            if search.space.has_original():
                for target in search.targets:
                    if not target.endswith(":fp32"):
                        extra = {"fallback": search.space.fallback_names()[0]} \
                            if target.endswith(":int8") else {}
                        study.enqueue_trial({**original_params(), "target": target, **extra})
        durations: list[float] = []

        def objective(trial):
            trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
            params = {knob: trial.suggest_categorical(knob, choices)
                      for knob, choices in search.space.categoricals().items()}
            params["target"] = trial.suggest_categorical("target", search.targets)
            if params["target"].endswith(":int8"):
                params["fallback"] = trial.suggest_categorical("fallback",
                                                               search.space.fallback_names())
            name = candidate_name(params)
            earlier = next((t for t in study.get_trials(deepcopy=False, states=(
                TrialState.COMPLETE, TrialState.PRUNED)) if candidate_name(t.params) == name), None)
            if earlier is not None:  # the sampler proposed a finished candidate: nothing to do
                trial.set_user_attr("status", "repeat")
                trial.set_user_attr("why", f"the candidate of trial {earlier.number}")
                if earlier.state == TrialState.COMPLETE:
                    return tuple(earlier.values)
                raise optuna.TrialPruned()
            runtime = params["target"].split(":")[0]
            # what a missing dependency rules out: every TensorRT candidate (no TensorRT or no
            # GPU there), else that runtime at that precision (e.g. NNCF for OpenVINO int8)
            scope = params["target"] if portable(runtime) else runtime
            gone = next((search.inapplicable[k] for k in params.items()
                         if k in search.inapplicable), None)
            if gone:  # the choice changed nothing at an earlier candidate (dwsep: no conv)
                trial.set_user_attr("status", "skipped")
                trial.set_user_attr("why", f"dropped from the space: {gone}")
                raise optuna.TrialPruned()
            if scope in search.unusable:  # found missing at an earlier candidate
                trial.set_user_attr("status", "skipped")
                trial.set_user_attr("why", search.unusable[scope])
                raise optuna.TrialPruned()
            front = front_points(study)
            began = time.perf_counter()
            built = dict(self._built_seconds())
            try:
                outcome = self._evaluate(search, params, front)
            except DeviceLostError as exc:  # the trial fails (not pruned): a rerun retries it
                search.lost = exc.message
                trial.set_user_attr("why", exc.message)
                study.stop()
                raise
            except MissingDependencyError as exc:  # the runtime (or its GPU) is missing there:
                # no candidate of it can run, so the rest of them are skipped with this reason
                search.unusable[scope] = exc.message
                self.say(f"{device.name}: {scope} candidates skipped: {exc.message}")
                trial.set_user_attr("status", "skipped")
                trial.set_user_attr("why", exc.message)
                raise optuna.TrialPruned() from None
            except UnchangedError as exc:  # the pass changed nothing: no candidate to build,
                # and the choice is dropped from the space (said once; its trials are skipped)
                knob = (exc.knob, params[exc.knob])
                if knob not in search.inapplicable:
                    search.inapplicable[knob] = exc.message
                    search.dropped.append({"knob": exc.knob, "value": params[exc.knob],
                                           "why": exc.message})
                    self.say(f"{device.name}: {exc.knob} {params[exc.knob]} dropped from the "
                             f"space: {exc.message}")
                trial.set_user_attr("status", "skipped")
                trial.set_user_attr("why", exc.message)
                raise optuna.TrialPruned() from None
            except EdgekitError as exc:  # this candidate cannot be made (e.g. pruning wipes a layer)
                trial.set_user_attr("status", "failed")
                trial.set_user_attr("why", exc.message)
                raise optuna.TrialPruned() from None
            cost = {k: round(self._built_seconds().get(k, 0.0) - built.get(k, 0.0), 3)
                    for k in self.builder.seconds}
            cost["measure_s"] = round(sum(s["measure_s"] for s in outcome["steps"]), 3)
            cost["total_s"] = round(time.perf_counter() - began, 3)
            durations.append(cost["total_s"])
            for key in ("status", "why", "steps"):
                trial.set_user_attr(key, outcome[key])
            trial.set_user_attr("cost", cost)
            if outcome["values"] is None:
                raise optuna.TrialPruned()
            return outcome["values"]

        out_of_time = []

        def keep_time(study, _trial) -> None:
            if deadline is None:
                return
            typical = sorted(durations)[len(durations) // 2] if durations else 0.0
            if time.monotonic() + typical > deadline:
                out_of_time.append(True)
                study.stop()

        def tried() -> int:
            return len({candidate_name(t.params) for t in study.get_trials(
                deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))})

        queued = [t for t in study.trials if t.state == TrialState.WAITING]
        wanted = [{**original_params(), "target": f"{rt}:fp32"} for rt in search.baselines]
        originals = [t for t in queued if t.system_attrs.get("fixed_params") in wanted]
        if originals and search.lost is None:  # measured already (cache hits): whatever the time
            study.optimize(objective, n_trials=len(originals), catch=(DeviceLostError,))
        # `trials` counts distinct candidates: a sampler's repeats (cheap, answered from the
        # study) do not use up the budget, within a bound on the attempts.
        wanted = min(self.settings.trials, search.space.size(search.targets))
        attempts = 0
        while (tried() < wanted and attempts < 3 * self.settings.trials + 10
               and search.lost is None and not out_of_time
               and (deadline is None or time.monotonic() < deadline)):
            batch = wanted - tried()
            timeout = None if deadline is None else max(1.0, deadline - time.monotonic())
            study.optimize(objective, n_trials=batch, timeout=timeout,
                           callbacks=[keep_time], catch=(DeviceLostError,))
            attempts += batch
        return self._finish(search, study, time.monotonic() - started)

    # ------------------------------------------------------------------ the decision
    def _finish(self, search: DeviceSearch, study: Any, seconds: float) -> dict[str, Any]:
        candidates = candidates_of(study) if study is not None else []
        min_speedup = self.settings.min_speedup
        for c in candidates:
            if c["p50_ms"] is not None and search.baselines:
                c["speedup"] = round(search.fastest_fp32_ms / c["p50_ms"], 4)
                # (issue 18) a ratio from a disturbed run (its own or a baseline's) is marked
                c["speedup_disturbed"] = bool(c.get("disturbed") or any(
                    b.get("disturbed") for b in search.baselines.values()))
                iv = self._interval(search, c["key"], search.fastest_baseline["key"],
                                    min_speedup)
                if iv is not None:
                    c["speedup_ci"] = [round(iv["ci_low"], 4), round(iv["ci_high"], 4)]
                    c["speedup_ci_level"] = iv["confidence"]
                    c["speed_verdict"] = iv["verdict"]
            if c["top1"] is not None and search.baselines:
                c["drop_points"] = round(100 * search.reference_top1 - c["top1"], 4)
        winner, why = self._decide(search, candidates)
        measured = [c for c in candidates if c.get("values")]
        front_idx = pareto([(c["p50_ms"], c["top1"]) for c in measured])
        front = [measured[i]["name"] for i in front_idx]
        for c in candidates:
            c["on_front"] = c["name"] in front
            c["winner"] = winner is not None and c["trial"] == winner["trial"]
        result = {"device": search.device.name, "targets": search.targets, "batch": search.batch,
                  "baselines": search.baselines, "reference_top1": (
                      search.reference_top1 if search.baselines else None),
                  "fastest_fp32_ms": search.fastest_fp32_ms if search.baselines else None,
                  "candidates": candidates, "front": front,
                  "winner": None, "why": why, "lost": search.lost,
                  "dropped": search.dropped, "notes": search.notes,
                  "space": (search.space or self.space).model_dump(mode="json"),
                  "seconds": round(seconds, 1)}
        if search.fleet is not None:  # which device of the fleet, where (and on which node)
            result.update(where=search.fleet.physical, resource=search.fleet.resource,
                          node=search.fleet.node)
        if winner is not None:
            result["winner"] = self._deliver(search, winner, result)
        else:
            best = sorted(measured, key=lambda c: (c.get("drop_points", 1e9), c["p50_ms"]))[:5]
            result["best_tried"] = [c["name"] for c in best]
        self._write_device_manifest(search, result)
        return result

    def _latency_of(self, key: str | None) -> dict[str, Any] | None:
        record = self.cache.get(key, count=False) if key else None
        latency = (record or {}).get("latency") or {}
        return latency if latency.get("samples_ms") else None

    def _interval(self, search: DeviceSearch, key: str | None, other_key: str | None,
                  min_speedup: float) -> dict[str, Any] | None:
        """The speed-up of measurement `key` over `other_key` with its interval and verdict
        (runtimes/speedup.py), from the two stored runs; None without samples."""
        from edgekit.runtimes.speedup import compare, verdict

        confidence = search.device.latency.confidence
        if key is not None and key == other_key:
            same = {"speedup": 1.0, "ci_low": 1.0, "ci_high": 1.0, "confidence": confidence,
                    "method": "the same measurement", "min_speedup": min_speedup}
            return {**same, "verdict": verdict(same, min_speedup)}
        mine, other = self._latency_of(key), self._latency_of(other_key)
        if mine is None or other is None:
            return None
        return compare(mine, other, min_speedup=min_speedup, confidence=confidence)

    def _decide(self, search: DeviceSearch, candidates: list[dict[str, Any]]
                ) -> tuple[dict[str, Any] | None, str]:
        """The winner: the fastest within the budget and not slower than the original beyond
        the noise (`choose`); a simpler candidate it only ties with takes its place
        (`prefer_simpler`); a winner that is not the original is timed again in alternating
        rounds with the fastest original on its device (here, or on the remote device), and
        dropped if that shows it slower, or replaced by the original if it only ties with it.
        When that cannot be done (the device dropped, the Ray executor), the winner stands on
        its two-run interval and `confirmation_failed` and the why say so."""
        min_speedup = self.settings.min_speedup
        pool = list(candidates)
        while True:
            winner, why = choose(pool, self.max_drop, min_speedup)
            if winner is None:
                return None, why
            winner, tie = prefer_simpler(
                winner, pool, self.max_drop, min_speedup,
                lambda a, b: self._interval(search, a["key"], b["key"], 1.0))
            why = tie or why
            original = search.fastest_baseline
            if winner["key"] == original["key"]:
                return winner, why
            try:
                confirmed = self._confirm(search, winner, original)
            except (DeviceLostError, ConfirmationUnavailableError) as exc:
                # the winner stands on the interval of its two runs; not cached: a rerun tries again
                winner["confirmation_failed"] = exc.message
                self.say(f"{search.device.name}: the winner was not confirmed: {exc.message}")
                return winner, (f"{why}; not confirmed against the original in alternating "
                                f"rounds ({exc.message}): it stands on the interval of its two "
                                "separate runs")
            winner["confirmed"] = confirmed
            from edgekit.runtimes.speedup import describe

            said = f"{describe(confirmed)} in {confirmed['rounds']} alternating rounds"
            if confirmed["verdict"] == "slower":
                winner["speed_verdict"] = "slower"
                winner["why"] = (f"timed again with the original: {said}, under "
                                 f"{min_speedup:g}×")
                pool = [c for c in pool if c is not winner]
                continue
            tied = next((c for c in pool if c.get("key") == original["key"]), None)
            if confirmed["ci_low"] <= 1.0 and tied is not None and min_speedup <= 1.0 \
                    and tied.get("drop_points") is not None \
                    and tied["drop_points"] <= self.max_drop + 1e-9:
                return tied, (f"the original ties with the fastest candidate, {winner['name']}, "
                              f"timed together: {said}, within the noise; the simpler artifact "
                              "wins")
            return winner, f"{why}; confirmed against the original: {said}"

    def _confirm(self, search: DeviceSearch, winner: dict[str, Any],
                 original: dict[str, Any], rounds: int = 6) -> dict[str, Any]:
        """The winner and the fastest fp32 original timed in alternating rounds on the device
        (runtimes/speedup.py; on a remote device by the device itself, measure.py): the
        speed-up with its interval, cached like a measurement."""
        import json

        from edgekit.validate.bench import time_against_original

        path = self.cache.root / "confirmations" / \
            f"{digest(winner['key'], original['key'], rounds)}.json"
        if path.is_file():
            return json.loads(path.read_text())
        device = search.device
        self.say(f"{device.name}: timing {winner['name']} and the original together "
                 f"({rounds} alternating rounds)")
        result = time_against_original(
            Path(winner["artifact"]), Path(original["artifact"]), self.bundle.spec, device,
            self.eval_set.x, search.batch, runtime=winner["params"]["target"].split(":")[0],
            original_runtime=original["target"].split(":")[0],
            min_speedup=self.settings.min_speedup, confidence=device.latency.confidence,
            rounds=rounds, around=self._device_lock(search),
            timer=lambda artifacts, x: alternate_on_device(
                artifacts, device, spec=self.bundle.spec, x=x, rounds=rounds,
                executor=search.executor))
        atomic_write_json(path, result)
        return result

    def _deliver(self, search: DeviceSearch, winner: dict[str, Any],
                 result: dict[str, Any]) -> dict[str, Any]:
        """Copy the winning artifact (and its weights file) into out/<device>/."""
        folder = self.device_folder(search.device.name)
        folder.mkdir(parents=True, exist_ok=True)
        source = Path(winner["artifact"])
        copied = []
        siblings = [source, source.with_suffix(".bin"), Path(str(source) + ".data")]
        for path in siblings:
            if path.is_file():
                from edgekit.io.files import atomic_path

                with atomic_path(folder / path.name) as tmp:
                    shutil.copyfile(path, tmp)
                copied.append(path.name)
        return {**winner, "path": str(folder / source.name), "files": copied}

    def _write_device_manifest(self, search: DeviceSearch, result: dict[str, Any]) -> None:
        from edgekit.io.artifacts import manifest_entries

        folder = self.device_folder(search.device.name)
        folder.mkdir(parents=True, exist_ok=True)
        outputs = []
        winner = result["winner"]
        if winner:
            source = Path(winner["artifact"])
            entry = dict(manifest_entries(source)[-1]) if manifest_entries(source) else {}
            entry.update(path=source.name, role="optimized", model=self.bundle.name)
            entry.setdefault("input_spec", self.bundle.spec.model_dump(mode="json"))
            outputs.append(entry)
        config = {"space": self.space.model_dump(mode="json"), "max_drop": self.max_drop,
                  "min_speedup": self.settings.min_speedup, "trials": self.settings.trials,
                  "time_budget": self.settings.time_budget, "seed": self.settings.seed,
                  "device": search.device.model_dump(mode="json"), "batch": search.batch,
                  "eval": self.eval_source, "eval_limit": self.eval_limit,
                  "train": self.train_source, "calib": self.calib_source,
                  "training": self.train.model_dump(mode="json")}
        metrics = {k: result[k] for k in ("baselines", "reference_top1", "fastest_fp32_ms",
                                          "candidates", "front", "winner", "why", "lost",
                                          "dropped", "notes", "seconds") if k in result}
        metrics["cache"] = self.cache.summary()
        Manifest(folder).add_stage("optimize", inputs={"checkpoint": self.checkpoint},
                                   config=config, outputs=outputs, metrics=metrics)

    def _speed_section(self, result: dict[str, Any], c: dict[str, Any],
                       record: dict[str, Any]) -> dict[str, Any]:
        """A candidate's speed-up as records carry it (`speedup_vs`, see validate/gate.py):
        against the fp32 original on the device's fastest runtime, which is the bar optimize
        sets, with the interval from the two runs (or from the alternating rounds that
        confirmed the winner)."""
        from edgekit.validate.gate import speedup_section

        fastest = min(result["baselines"].items(), key=lambda kv: kv[1]["p50_ms"])
        section = speedup_section(record["latency"].get("p50_ms"), fastest[1]["p50_ms"],
                                  batch=record.get("batch") or result["batch"],
                                  reference=f"original {fastest[0]}:fp32",
                                  runtime=record.get("runtime") or "")
        confirmed = c.get("confirmed")
        if confirmed:
            section.update({k: confirmed[k] for k in ("speedup", "ci_low", "ci_high",
                                                       "confidence", "method", "p50_ms",
                                                       "reference_p50_ms", "rounds")})
        elif c.get("speedup_ci"):
            section.update(ci_low=c["speedup_ci"][0], ci_high=c["speedup_ci"][1],
                           confidence=c.get("speedup_ci_level"))
        elif c.get("key") == fastest[1]["key"]:
            section.update(ci_low=1.0, ci_high=1.0, method="the same measurement")
        return section

    def _report(self, results: dict[str, dict[str, Any]]) -> str | None:
        """The HTML report: per device every measured candidate (the front drawn, the winner
        starred) and the originals."""
        from edgekit.results.report import write_report
        from edgekit.validate.gate import Budget, evaluate_gate

        records = []
        not_measured = {}
        for name, result in results.items():
            left = [{"name": c["name"], "status": c["status"], "why": c.get("why") or ""}
                    for c in result["candidates"] if not c.get("values")]
            if left or result.get("dropped") or result.get("notes") or result.get("lost"):
                not_measured[name] = {
                    "candidates": left, "dropped": result.get("dropped") or [],
                    "notes": [*result.get("notes", []), *filter(None, [
                        result.get("lost") and f"the search stopped: {result['lost']}"])]}
            shown = {c["key"]: c for c in result["candidates"] if c.get("values")}
            for runtime, b in result["baselines"].items():  # the originals, always shown
                shown.setdefault(b["key"], {**b, "name": f"original {runtime}:fp32",
                                            "drop_points": 100 * (result["reference_top1"]
                                                                  - b["top1"])})
            for key, c in shown.items():
                record = self.cache.get(key, count=False)
                if record is None:
                    continue
                accuracy = dict(record.get("accuracy") or {})
                if accuracy.get("top1_drop_points") is None and c.get("drop_points") is not None:
                    accuracy["top1_drop_points"] = c["drop_points"]  # remote: no reference there
                speed = self._speed_section(result, c, record)
                budget = Budget(max_drop=self.max_drop, min_speedup=self.settings.min_speedup)
                record = {**record, "accuracy": accuracy, "model": self.bundle.name,
                          "artifact_name": plot_label(c["name"]),
                          "optimize_winner": bool(c.get("winner")),
                          "decisive": bool(c.get("winner")),
                          "speedup": speed["speedup"], "speedup_vs": speed,
                          "gate": evaluate_gate(accuracy, budget, [speed])}
                records.append(record)
        if not records and not not_measured:
            return None
        path = self.out / "report.html"
        write_report(records, path, markdown_path=self.out / "report.md",
                     title=f"edgekit optimize: {self.bundle.name}", source=str(self.out),
                     not_measured=not_measured)
        return str(path)
