"""The HTML and markdown report of `edgekit optimize`: per device every measured candidate (the
front drawn, the winner starred), the originals, and where each other candidate stopped."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgekit.optimize.records import Candidate, DeviceResult
from edgekit.optimize.trials import plot_label
from edgekit.results.record import ResultRecord, SpeedupSection

if TYPE_CHECKING:  # pragma: no cover
    from edgekit.results.report import LeftOut, NotMeasured


def stopped(c: Candidate) -> LeftOut:
    """A candidate that did not go to the end, as the report lists it: the rung where it was
    cut (screen: timed undistilled; short: the short distillation) and why."""
    rung = c.get("rung")
    status = f"{c['status']}, cut at the {rung} rung" if rung and c.get("cut") else c["status"]
    return {"name": c["name"], "status": status, "why": c.get("cut") or c.get("why") or ""}


class Reporting:
    """The Optimizer's report (a part of edgekit.optimize.search.Optimizer)."""

    def _speed_section(self, result: DeviceResult, c: Candidate,
                       record: ResultRecord) -> SpeedupSection:
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

    def _report(self, results: dict[str, DeviceResult]) -> str | None:
        """The HTML report: per device every measured candidate (the front drawn, the winner
        starred) and the originals."""
        from edgekit.results.report import write_report
        from edgekit.validate.gate import Budget, evaluate_gate

        records = []
        not_measured: dict[str, NotMeasured] = {}
        for name, result in results.items():
            left = [stopped(c) for c in result["candidates"]
                    if not c.get("values") or c.get("cut")]
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

