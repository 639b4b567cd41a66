"""benchmarks/bench_search_cost.py (issue 28's cost curve): the split is summed over every trial
of every device's study, and the README section shows before and after side by side with the
switches that make "before"."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_search_cost as bench  # noqa: E402


def _point(mode: str, key: str, value: int, seconds: float, split: tuple[float, ...],
           winner: str) -> dict:
    return {"mode": mode, "point": f"{key}-{value}", key: value,
            "trials": value if key == "trials" else 10, "devices": 1 if key == "trials" else value,
            "seconds": seconds, "split": dict(zip(bench.SPLIT, split, strict=True)),
            "distillations": {"short": 2, "full": 1, "inherited": 1, "teacher_cached": 2},
            "winners": [{"name": winner, "p50_ms": 0.02, "drop_points": 0.5, "speedup": 1.4}]}


def test_the_section_pairs_before_and_after_and_names_the_switches():
    data = {"benchmark": "search-cost", "threads": 2, "device_candidates": 10,
            "train_precision": "fp32", "space": bench.SPACE,
            "environment": {"cpu": {"model": "Test CPU", "usable_cores": 2}},
            "before": {"env": bench.BEFORE_ENV, "distill": bench.BEFORE_DISTILL},
            "curves": {
                "candidates": [_point("before", "trials", 5, 40.0, (1, 2, 20, 3, 14), "a"),
                               _point("after", "trials", 5, 30.0, (1, 0, 15, 3, 11), "b")],
                "devices": [_point("before", "devices", 2, 80.0, (2, 4, 40, 6, 28), "a"),
                            _point("after", "devices", 2, 20.0, (2, 1, 10, 6, 1), "a")]}}
    text = bench.section(data)
    rows = [line for line in text.splitlines() if line.startswith("| 5 |")
            or line.startswith("| 2 |")]
    assert rows == [
        "| 5 | 40 | 30 | 0.75 | 1 / 2 / 20 / 3 / 14 | 1 / 0 / 15 / 3 / 11 | 2 + 1 → 2 + 1 | 1, 2 "
        "| a (-0.50) → b (-0.50) |",
        "| 2 | 80 | 20 | 0.25 | 2 / 4 / 40 / 6 / 28 | 2 / 1 / 10 / 6 / 1 | 2 + 1 → 2 + 1 | 1, 2 "
        "| a (-0.50) → a (-0.50) |"]
    assert "`EDGEKIT_TEACHER_CACHE_MB=0`" in text
    assert "`distill: {inherit: false}`" in text and "`distill: {short_limit: 2000}`" in text
    assert "Test CPU, 2 usable cores" in text and "one run" in text


def test_before_differs_from_after_only_by_the_named_switches():
    after, before = bench.space("after", 20), bench.space("before", 20)
    assert "distill" not in after and after["trials"] == 20
    assert before == {**after, "distill": {"inherit": False, "short_limit": 2000}}


def test_the_split_counts_every_trial_of_every_study(tmp_path):
    """A promoted candidate has two trials (short, then full): both costs count, on every
    device's study (the search's own summary keeps one trial per candidate)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    for device, costs in (("a", [{"build_s": 1.0, "distill_s": 4.0, "teacher_s": 1.0},
                                 {"build_s": 0.0, "distill_s": 10.0, "teacher_s": 2.0}]),
                          ("b", [{"build_s": 0.5, "measure_s": 2.0}])):
        study = optuna.create_study(storage=storage, study_name=device)
        for cost in costs:
            trial = study.ask()
            trial.set_user_attr("cost", cost)
            study.tell(trial, 1.0)
    costs = bench.trial_costs(tmp_path)
    assert len(costs) == 3
    split = bench.cost_split({"candidates": [{"cost": c} for c in costs]}, 30.0)
    assert split == {"build_s": 1.5, "teacher_s": 3.0, "distill_s": 11.0, "measure_s": 2.0,
                     "other_s": 12.5}
