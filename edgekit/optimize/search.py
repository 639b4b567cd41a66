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
     wins) and still enter the front — briefly first (successive halving); after the trials
     the fastest short-only candidate of each architecture that could still change the winner
     is distilled fully, fastest first, while the time budget lasts;
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

import functools
import threading
import time
from pathlib import Path
from typing import Any

from edgekit.data.given import DataSources
from edgekit.errors import EdgekitError, InputError, MissingDependencyError
from edgekit.events import emit
from edgekit.io.files import atomic_write_json, sha256_file
from edgekit.optimize.build import Arch, Builder
from edgekit.optimize.cache import CandidateCache, device_state, digest
from edgekit.optimize.candidate import CandidateSteps
from edgekit.optimize.decide import Decision
from edgekit.optimize.device_search import (
    DeviceSearch,
    import_optuna,
    minimum_seconds,
    usable_targets,
)
from edgekit.optimize.records import OptimizeSummary
from edgekit.optimize.report import Reporting
from edgekit.optimize.space import OptimizeSettings, parse_duration
from edgekit.optimize.study import StudyRunner
from edgekit.optimize.trials import STUDY_DB, check_study

__all__ = ["DeviceSearch", "Optimizer", "import_optuna", "minimum_seconds", "usable_targets"]


class Optimizer(CandidateSteps, StudyRunner, Decision, Reporting):
    """One `edgekit optimize` run over one model and several devices (its parts: candidate.py
    builds and measures one candidate, study.py runs a device's trials, decide.py chooses and
    delivers the winner, report.py writes the report)."""

    def __init__(self, checkpoint: str | Path, devices: list[Any], settings: OptimizeSettings, *,
                 out_dir: str | Path, eval_source: str, max_drop: float = 1.0,
                 train_source: str | None = None, calib_source: str | None = None,
                 eval_limit: int | None = None, data_dir: str | None = None,
                 bundle: Any = None,
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
        self.say = functools.partial(emit, tag="optimize")  # [optimize] ... (edgekit.events)
        self.cache = CandidateCache(self.out / "cache")
        self._storage: Any = None  # the Optuna study storage, shared by the devices' threads
        self._spent = threading.local()  # per device thread: its builds' seconds
        self.live_progress = True  # a live bar of the trials on a terminal (the CLI's --json: no)
        self.train_size: int | None = None  # images of the training set (when distilling)

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
            searches.append(DeviceSearch(device, ok, batch, device_state(device, here=here),
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
    def run(self) -> OptimizeSummary:
        searches = self.check()
        started = time.monotonic()
        budget = parse_duration(self.settings.time_budget) if self.settings.time_budget else None
        from edgekit.io.outputs import claim_output_folder

        claim_output_folder(self.out)  # edgekit's folder (its manifest first), as compress's
        self._prepare()
        prepared = time.monotonic()
        self._fit(searches)  # each prune ratio and dwsep choice built once on the original
        setup = {"prepare_s": round(prepared - started, 1),
                 "fit_s": round(time.monotonic() - prepared, 1)}
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
                   "seconds": round(time.monotonic() - started, 1), "setup_s": setup,
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
                              resource=search.fleet.resource) as executor:
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
        self._resolve_schedule()
        self._resolve_calibration()
        self.builder = Builder(self.bundle, sha256_file(self.checkpoint), self.out, self.space,
                               data=DataSources(train=self.train_source,
                                                calib=self.calib_source, data_dir=self.data_dir),
                               parity_x=self.eval_set.x[:256],
                               seed=self.settings.seed, train=self.train)
        self._ref_logits = None

    def _resolve_schedule(self) -> None:
        """The distillation schedule made concrete for this model and training set
        (schedule.py: the short rung's images a fraction of the training set, scaled by the
        model's weights), said once."""
        self.train_size = None
        if not self.space.needs_training() or not self.train_source:
            return
        from edgekit.optimize.schedule import training_size

        self.train_size = training_size(self.train_source, self.bundle.spec, self.data_dir)
        weights = sum(p.numel() for p in self.bundle.model.parameters())
        schedule = self.space.distill.resolve(self.train_size, weights)
        if schedule is not self.space.distill:
            short = schedule.images("short", self.train_size) // schedule.short_epochs
            self.say(f"short distillation: {short:,} of {self.train_size:,} training images "
                     f"({weights:,} weights)" + ("" if schedule.has_full else
                                                 ", the same as the full one: one rung"))
        self.space = self.space.model_copy(update={"distill": schedule})

    def _resolve_calibration(self) -> None:
        """A calibration set smaller than the space's calib_size is used whole, said once
        (not every int8 candidate failing on it: issue 27)."""
        if "int8" not in self.space.precisions or not self.calib_source \
                or not self.space.calib_size:
            return
        from edgekit.optimize.schedule import training_size

        held = self.train_size if self.train_size and self.calib_source == self.train_source \
            else training_size(str(self.calib_source), self.bundle.spec, self.data_dir)
        if 0 < held < self.space.calib_size:
            self.say(f"calib: {self.calib_source} holds {held} samples, fewer than calib_size "
                     f"{self.space.calib_size}: int8 calibrates on all {held}")
            self.space = self.space.model_copy(update={"calib_size": held})

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

    @staticmethod
    def _scored_as_reference(device: Any, runtime: str) -> bool:
        """Whether `runtime` on `device` (measured here) computes the reference logits of the
        original's fp32 ONNX model as `_reference_logits_here` does (its runtime, its options):
        that baseline's top-1 is then read from them, not predicted a second time."""
        from edgekit.devices import default_cpu_profile
        from edgekit.kinds import default_runtime
        from edgekit.runtimes.base import get_runner

        runner = get_runner(runtime)
        return runtime == default_runtime("onnx") and runner.computes_alike(
            *(runner.parse_options(d.runner_options(runtime))
              for d in (device, default_cpu_profile())))

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

