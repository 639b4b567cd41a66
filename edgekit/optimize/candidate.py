"""One candidate of `edgekit optimize`: built (or found), measured on its device (or found in the
cache), and carried up the rungs: timed undistilled, then the short distillation, then the full
one (edgekit.optimize.schedule)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from edgekit.data.given import DataSources
from edgekit.errors import ConfigError
from edgekit.executors import ValidationJob
from edgekit.optimize.build import Arch
from edgekit.optimize.device_search import DeviceSearch
from edgekit.optimize.measure import EvalLogits, measure_on_device
from edgekit.optimize.records import Measurement, Outcome, Params
from edgekit.optimize.trials import dominated
from edgekit.validate.gate import Budget


class CandidateSteps:
    """The Optimizer's candidate steps (a part of edgekit.optimize.search.Optimizer)."""

    def _measure(self, search: DeviceSearch, arch: Arch, stage: str, target: str,
                 fallback: str, *, accuracy: bool = True) -> Measurement:
        """Build (or find) the artifact and measure it (or find its measurement): a candidate
        summary with the record's key in the cache. `accuracy=False`: its latency only (its
        top1 None) where the device measures here; a remote device's job scores it too."""
        device = search.device
        accuracy = accuracy or not search.measured_here
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
            distilled = self.builder.seconds["distill_s"] - before.get("distill_s", 0.0)
        built_there = entry.get("build_on_device")  # an engine built from this ONNX model there
        key = self.cache.measurement_key(entry["path"], search.state,
                                         f"{runtime}:{built_there}" if built_there else runtime,
                                         search.batch,
                                         self.eval_key if accuracy else "latency only")
        record = self.cache.get(key)
        cached = record is not None
        measure_s = 0.0
        if record is None:
            ref_logits = self._reference_logits() if search.measured_here and accuracy \
                else None
            with self._device_lock(search):
                start = time.perf_counter()
                job = ValidationJob(target=Path(entry["path"]), device=device, budget=Budget(),
                                    batches=[search.batch],
                                    data=DataSources(eval=self.eval_source,
                                                     data_dir=self.data_dir,
                                                     eval_limit=self.eval_limit))
                own = stage == "original" and target.endswith(":fp32") \
                    and self._scored_as_reference(device, runtime)
                logits = None if ref_logits is None else EvalLogits(ref_logits, own)
                record = measure_on_device(entry, runtime, job, executor=search.executor,
                                           spec=self.bundle.spec, eval_set=self.eval_set,
                                           logits=logits, accuracy=accuracy)
            measure_s = time.perf_counter() - start
            record["optimize"] = {"arch": arch.label, "stage": stage, "target": target,
                                  "fallback": fallback, "float_layers": entry["float_layers"]}
            self.cache.put(key, record)
        return {"key": key, "cached": cached, "artifact": str(entry["path"]),
                "stage": stage, "target": target,
                "p50_ms": record["latency"]["p50_ms"],
                "disturbed": record["latency"].get("disturbed"),  # (issue 18)
                "top1": record["accuracy"].get("top1"), "measure_s": round(measure_s, 3),
                "float_layers": entry["float_layers"], "distill_s": round(distilled, 3)}

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

    def _evaluate(self, search: DeviceSearch, params: Params,
                  front: list[tuple[float, float]], *, promote: bool = False,
                  full_affordable: Any = None, unpaid: Any = None) -> Outcome:
        """A candidate's outcome: {'values': (p50, top1 %) | None, 'status', 'why', 'steps'}.
        `promote`: carry it to the full rung whatever its short result (a promotion after the
        trials); `full_affordable()`: whether the time left pays for a full distillation;
        `unpaid(arch)`: why the time left does not pay for its short distillation (or None)."""
        arch = Arch.of(params)
        target, fallback = params["target"], params.get("fallback", "none")
        if not arch.changed:
            return self._original(search, target, fallback, front)
        # the screen times the undistilled candidate (latency does not depend on the weights)
        # and scores nothing: its top-1 before distillation decides nothing
        screen = self._measure(search, arch, "init", target, fallback, accuracy=False)
        cut = None if promote else self._screen_cut(search, screen, front)
        if cut is not None:
            return {"status": cut[0], "steps": [screen], "values": None, "why": cut[1]}
        why = None if promote or unpaid is None or self._made(search, arch, "short") \
            else unpaid(arch)
        if why is not None:
            return {"status": "out of time", "steps": [screen], "values": None, "why": why}
        return self._rungs(search, arch, target, fallback, front, [screen], promote,
                           full_affordable or (lambda: True))

    def _original(self, search: DeviceSearch, target: str, fallback: str,
                  front: list[tuple[float, float]]) -> Outcome:
        """The original's weights on `target`. Off its fp32 baselines, where this machine
        measures, it is timed first and scored over the eval set only when that timing leaves
        it a chance (the screen of `_screen_cut`): scoring is most of a measurement (a
        ResNet-18's fp16 on ONNX Runtime on a 2-core AVX2 CPU, slower than its fp32: 75 s of
        the 85)."""
        arch, steps = Arch(), []
        if search.measured_here and not target.endswith(":fp32"):
            steps.append(self._measure(search, arch, "original", target, fallback,
                                       accuracy=False))
            cut = self._screen_cut(search, steps[0], front, undistilled=False)
            if cut is not None:
                return {"status": cut[0], "steps": steps, "values": None, "why": cut[1]}
        steps.append(self._measure(search, arch, "original", target, fallback))
        return {"status": "measured", "steps": steps, "why": "the original's weights",
                "values": (steps[-1]["p50_ms"], 100 * steps[-1]["top1"])}

    def _screen_cut(self, search: DeviceSearch, screen: Measurement,
                    front: list[tuple[float, float]], *,
                    undistilled: bool = True) -> tuple[str, str] | None:
        """(status, why) when the timing alone already rules the candidate out (the undistilled
        model's, or the original's weights off fp32, before scoring): slower than the
        original, a tie with it (which the simpler original wins), or unable to enter the
        front even at the original's top-1. Latency does not depend on the weights."""
        from edgekit.runtimes.speedup import describe

        state, skipped = ("undistilled", "not distilled") if undistilled else ("", "not scored")
        state = f" {state}" if state else ""
        latency = screen["p50_ms"]
        bar = search.fastest_fp32_ms / self.settings.min_speedup
        ref = 100 * search.reference_top1
        iv = self._interval(search, screen["key"], search.fastest_baseline["key"],
                            self.settings.min_speedup)
        if (iv["verdict"] == "slower") if iv else latency > bar:
            numbers = f" ({describe(iv)})" if iv else ""
            return "too slow", (f"{latency:.3f} ms{state}, slower than the original's "
                                f"{search.fastest_fp32_ms:.3f} ms{numbers}: {skipped}")
        if iv and self.settings.min_speedup <= 1.0 and iv["ci_low"] <= 1.0:
            return "tie", (f"{latency:.3f} ms{state} against the original's "
                           f"{search.fastest_fp32_ms:.3f} ms ({describe(iv)}): a tie within the "
                           f"noise, which the simpler original wins; {skipped}")
        if dominated((latency, ref), front):
            return "dominated", (f"at {latency:.3f} ms even the original's top-1 ({ref:.2f}%) "
                                 f"would not enter the front: {skipped}")
        return None

    def _made(self, search: DeviceSearch, arch: Arch, stage: str) -> bool:
        """True when the architecture's distillation at `stage` exists (another target's
        candidate made it): carrying a candidate to that rung then costs an export and a
        timing."""
        return (self.builder.model_dir(arch, stage, search.device.round_to)
                / "model.pt").is_file()

    def _rungs(self, search: DeviceSearch, arch: Arch, target: str, fallback: str,
               front: list[tuple[float, float]], steps: list[Measurement], promote: bool,
               full_affordable: Any) -> Outcome:
        """The short rung, then the full one when the candidate is promoted: by `promote`, when
        its architecture's full distillation exists already, or (with a `promote_margin`) when
        its short result is within it of entering the front and the time left pays for it.
        Otherwise it waits for the promotions after the trials (study.py): fastest first, which
        the budget decides."""
        short = self._measure(search, arch, "short", target, fallback)
        steps.append(short)
        schedule = search.space.distill
        top1, ref = 100 * short["top1"], 100 * search.reference_top1
        result = {"status": "short", "steps": steps,
                  "values": (short["p50_ms"], top1), "why": "short distillation only"}
        if not schedule.has_full:
            result["why"] = "distilled (the short and full schedules are the same)"
            return result
        margin = schedule.promote_margin
        if promote:
            why = "promoted to the full distillation after the trials, the fastest of its " \
                  "architecture that could still beat the winner"
        elif self._made(search, arch, "full"):
            why = "promoted to the full distillation (its architecture's was made already)"
        elif margin is None:
            result["why"] = (f"short distillation reached {top1:.2f}%: waits for the "
                             "promotions after the trials (fastest first)")
            return result
        elif top1 + margin < ref - self.max_drop:
            result["why"] = (f"short distillation reached {top1:.2f}%, more than {margin:g} "
                             f"points under the budget ({ref - self.max_drop:.2f}%): waits for "
                             "a promotion after the trials")
            return result
        elif dominated((short["p50_ms"], top1 + margin), front):
            result["why"] = (f"short distillation reached {top1:.2f}%; {margin:g} more points "
                             "would still not enter the front: not promoted")
            return result
        elif not full_affordable():
            result["why"] = (f"short distillation reached {top1:.2f}%; the time left does not "
                             "pay for a full distillation now: waits for a promotion after the "
                             "trials")
            return result
        else:
            why = "promoted to the full distillation"
        full = self._measure(search, arch, "full", target, fallback)
        steps.append(full)
        return {"status": "full", "steps": steps, "why": why,
                "values": (full["p50_ms"], 100 * full["top1"])}
