"""The decision of `edgekit optimize` on one device: the candidates' speed-ups with their
intervals, the winner (confirmed against the original in alternating rounds), its delivery
into OUT/<device>/ and the device's manifest."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from edgekit.io.files import atomic_write_json
from edgekit.io.manifest import Manifest
from edgekit.optimize.cache import digest
from edgekit.optimize.device_search import DeviceSearch
from edgekit.optimize.measure import (
    ConfirmationUnavailableError,
    DeviceLostError,
    alternate_on_device,
)
from edgekit.optimize.records import Candidate, DeviceResult, Measurement
from edgekit.optimize.trials import choose, pareto, prefer_simpler
from edgekit.runtimes.records import LatencyStats, PairedSpeedup, SpeedupInterval

RUNGS = {"measured": "original", "too slow": "screen", "tie": "screen", "dominated": "screen",
         "out of time": "screen",
         "short": "short", "full": "full"}


def rung_and_cut(c: Candidate, search: DeviceSearch, winner: Candidate | None
                 ) -> tuple[str | None, str | None]:
    """The last rung a candidate reached ('original': no distillation needed, 'screen': timed
    undistilled, 'short', 'full'; None: not measured) and why it stopped there (None when it
    went as far as its kind goes)."""
    rung = RUNGS.get(c["status"])
    if rung in ("original", "full") or (rung == "short" and not search.space.distill.has_full):
        return rung, None
    if rung != "short":
        return rung, c.get("why") or c["status"]
    reached = f"short distillation reached {c['top1']:.2f}%; " if c.get("top1") is not None \
        else ""
    if c["name"] in search.cut:
        return rung, f"{reached}not promoted: {search.cut[c['name']]}"
    if winner is not None and c.get("p50_ms") is not None and c["p50_ms"] >= winner["p50_ms"]:
        return rung, (f"{reached}not promoted: not faster than the winner ({winner['name']}, "
                      f"{winner['p50_ms']:.3f} ms), so a full distillation could not change it")
    return rung, c.get("why") or "not promoted"


class Decision:
    """The Optimizer's decision (a part of edgekit.optimize.search.Optimizer)."""

    def _finish(self, search: DeviceSearch, study: Any, seconds: float) -> DeviceResult:
        candidates = self._candidates(study) if study is not None else []
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
            c["rung"], c["cut"] = rung_and_cut(c, search, winner)
            if c["rung"] == "short" and c["cut"]:  # the table's why: where it stopped, and why
                c["why"] = c["cut"]
        result: DeviceResult = {
            "device": search.device.name, "targets": search.targets, "batch": search.batch,
            "baselines": search.baselines, "reference_top1": (
                search.reference_top1 if search.baselines else None),
            "fastest_fp32_ms": search.fastest_fp32_ms if search.baselines else None,
            "candidates": candidates, "front": front,
            "winner": None, "why": why, "lost": search.lost,
            "dropped": search.dropped, "notes": search.notes,
            "space": (search.space or self.space).model_dump(mode="json"),
            "seconds": round(seconds, 1), "baselines_s": round(search.baselines_s, 1)}
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

    def _latency_of(self, key: str | None) -> LatencyStats | None:
        record = self.cache.get(key, count=False) if key else None
        latency = (record or {}).get("latency") or {}
        return latency if latency.get("samples_ms") else None

    def _interval(self, search: DeviceSearch, key: str | None, other_key: str | None,
                  min_speedup: float) -> SpeedupInterval | None:
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

    def _decide(self, search: DeviceSearch, candidates: list[Candidate]
                ) -> tuple[Candidate | None, str]:
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

    def _confirm(self, search: DeviceSearch, winner: Candidate,
                 original: Measurement, rounds: int = 6) -> PairedSpeedup:
        """The winner and the fastest fp32 original timed in alternating rounds on the device
        (runtimes/speedup.py; on a remote device by the device itself, measure.py): the
        speed-up with its interval, cached like a measurement."""
        import json
        import time

        from edgekit.validate.bench import PairedTiming, time_against_original

        path = self.cache.root / "confirmations" / \
            f"{digest(winner['key'], original['key'], rounds)}.json"
        if path.is_file():
            return json.loads(path.read_text())
        device = search.device
        self.say(f"{device.name}: timing {winner['name']} and the original together "
                 f"({rounds} alternating rounds)")
        started = time.perf_counter()
        pair = PairedTiming(Path(winner["artifact"]), Path(original["artifact"]),
                            self.bundle.spec, search.batch,
                            runtime=winner["params"]["target"].split(":")[0],
                            original_runtime=original["target"].split(":")[0])
        result = time_against_original(
            pair, device, self.eval_set.x, min_speedup=self.settings.min_speedup, confidence=device.latency.confidence,
            rounds=rounds, around=self._device_lock(search),
            timer=lambda artifacts, x: alternate_on_device(
                artifacts, device, spec=self.bundle.spec, x=x, rounds=rounds,
                executor=search.executor))
        result["seconds"] = round(time.perf_counter() - started, 3)
        atomic_write_json(path, result)
        return result

    def _deliver(self, search: DeviceSearch, winner: Candidate,
                 result: DeviceResult) -> Candidate:
        """Copy the winning artifact (and its weights file) into out/<device>/."""
        from edgekit.io.files import atomic_path
        from edgekit.kinds import weights_file

        folder = self.device_folder(search.device.name)
        folder.mkdir(parents=True, exist_ok=True)
        source = Path(winner["artifact"])
        copied = []
        for path in (source, weights_file(source, existing=True)):
            if path is not None and path.is_file():
                with atomic_path(folder / path.name) as tmp:
                    shutil.copyfile(path, tmp)
                copied.append(path.name)
        return {**winner, "path": str(folder / source.name), "files": copied}

    def _write_device_manifest(self, search: DeviceSearch, result: DeviceResult) -> None:
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
                  "training": self.train.model_dump(mode="json"),
                  # how validate builds the original again (edgekit.validate.original)
                  "arch": self.bundle.arch, "arch_kwargs": self.bundle.arch_kwargs}
        metrics = {k: result[k] for k in ("baselines", "reference_top1", "fastest_fp32_ms",
                                          "candidates", "front", "winner", "why", "lost",
                                          "dropped", "notes", "seconds") if k in result}
        metrics["cache"] = self.cache.summary()
        Manifest(folder).add_stage("optimize", inputs={"checkpoint": self.checkpoint.resolve()},
                                   config=config, outputs=outputs, metrics=metrics)

