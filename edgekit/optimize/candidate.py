"""One candidate of `edgekit optimize`: built (or found), measured on its device (or found in the
cache), and carried up the rungs: timed undistilled, then the short distillation, then the full
one (edgekit.optimize.schedule)."""

from __future__ import annotations

import time
from typing import Any

from edgekit.errors import ConfigError
from edgekit.optimize.build import Arch
from edgekit.optimize.device_search import DeviceSearch
from edgekit.optimize.measure import measure_on_device
from edgekit.optimize.trials import dominated, dwsep_choice


class CandidateSteps:
    """The Optimizer's candidate steps (a part of edgekit.optimize.search.Optimizer)."""

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
            search.baselines[runtime] = self._measure(search, Arch(0.0, "off"), "original",
                                                      f"{runtime}:fp32", "none")
        described = ", ".join(f"{r} {c['p50_ms']:.3f} ms" for r, c in search.baselines.items())
        self.say(f"{search.device.name}: the fp32 original runs in {described}")

    def _evaluate(self, search: DeviceSearch, params: dict[str, Any],
                  front: list[tuple[float, float]]) -> dict[str, Any]:
        """A candidate's outcome: {'values': (p50, top1 %) | None, 'status', 'why', 'steps'}."""
        arch = Arch(float(params["prune"]), dwsep_choice(params["dwsep"]))
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

