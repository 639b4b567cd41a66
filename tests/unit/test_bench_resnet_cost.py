"""benchmarks/bench_resnet_cost.py (issue 28's goal 2): the README section sets the search of
BEFORE_COMMIT beside today's, with the wall-time ratio and the goal judged from the numbers; a
mode not run is read back only from a run of the same checkpoint, space, budget and CPU."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_resnet_cost as bench  # noqa: E402


def _run(mode: str, seconds: float, split: tuple[float, ...], winner: str | None,
         drop: float = 0.2) -> dict:
    return {"mode": mode, "code": "b0455dea" if mode == "before" else "1f80561a",
            "date": "2026-12-07T10:00:00+0000", "seconds": seconds, "candidates": 20,
            "winner_s": round(seconds * 0.8, 1),
            "fp32_ms": {"onnxruntime": 6.07, "openvino": 5.86},
            "split": dict(zip(bench.SPLIT, split, strict=True)),
            "rungs": {"original": 4, "short": 12, "full": 4},
            "winner": None if winner is None else {
                "name": winner, "target": "openvino:int8", "p50_ms": 0.9, "drop_points": drop}}


def _data(before_s: float, after_s: float, after_ratio: float, drop: float = 0.2) -> dict:
    return {"benchmark": "resnet-cost", "threads": 2, "space": bench.SPACE, "budget": "60m",
            "checkpoint": "resnet18_small-2ep", "checkpoint_sha256": "ab" * 32,
            "environment": {"cpu": {"model": "Test CPU", "usable_cores": 2}},
            "runs": {"before": _run("before", before_s, (100, 0, 2000, 300, 100),
                                    "prune 0.5 openvino:int8"),
                     "after": _run("after", after_s, (80, 30, 400, 200, 40),
                                   "prune 0.5 openvino:int8", drop)},
            "timing": {"anchor_p50_ms": 2.0, "before": {"p50_ms": 0.8, "ratio": 0.4},
                       "after": {"p50_ms": 2.0 * after_ratio, "ratio": after_ratio}}}


def test_the_section_sets_before_beside_after_with_the_ratio():
    text = bench.section(_data(2500.0, 750.0, 0.45))
    rows = [line for line in text.splitlines() if line.startswith(("| before", "| after"))]
    assert rows[0].startswith(
        "| before | `b0455de` | 6.07 / 5.86 | 2500 | 2000 | 100 / in distil / 2000 / 300 / 100 |")
    assert rows[1].startswith(
        "| after | `1f80561` | 6.07 / 5.86 | 750 | 600 | 80 / 30 / 400 / 200 / 40 |")
    assert rows[1].endswith("| prune 0.5 openvino:int8 | -0.20 | 0.900 | 0.450 |")
    assert "After ÷ before wall time: **0.30**" in text
    assert "until the winner was measured: 0.30" in text
    assert "not met" in text  # 0.30 > 0.25
    assert "Test CPU, 2 cores" in text and "`--time-budget 60m`" in text
    assert "as long during the after search" not in text  # the same machine speed


def test_a_machine_slower_during_one_search_is_said_with_the_bound_it_makes():
    data = _data(2500.0, 750.0, 0.45)
    data["runs"]["after"]["fp32_ms"] = {"onnxruntime": 9.02, "openvino": 8.91}
    text = bench.section(data)
    assert ("This machine ran the fp32 original 1.52× as long during the after search (8.91 ms)"
            " as during the before one (5.86 ms): the wall-time ratio is an upper bound") in text
    data["runs"]["after"]["fp32_ms"] = {"openvino": 5.0}
    assert "is a lower bound" in bench.section(data)


@pytest.mark.parametrize(("after_s", "ratio", "drop", "met"), [
    (600.0, 0.45, 0.2, True), (600.0, 0.55, 0.2, False), (600.0, 0.45, 1.5, False),
    (700.0, 0.45, 0.2, False)])
def test_the_goal_needs_the_wall_time_the_speed_and_the_accuracy(after_s, ratio, drop, met):
    text = bench.section(_data(2500.0, after_s, ratio, drop))
    assert ("): met." in text) is met


def test_old_records_are_counted_by_status():
    result = {"candidates": [{"name": "original onnxruntime:fp32", "status": "measured"},
                             {"name": "prune 0.5 openvino:int8", "status": "short"},
                             {"name": "prune 0.5 onnxruntime:int8", "status": "full"},
                             {"name": "prune 0.25 openvino:fp32", "status": "full",
                              "rung": "full"}]}
    assert bench.rungs(result) == {"original": 1, "short": 1, "full": 2}


def test_a_record_of_another_checkpoint_is_not_read_back(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "WORK", tmp_path)
    monkeypatch.setattr(bench, "_key", lambda checkpoint: {"checkpoint": "new"})
    (tmp_path / "before.json").write_text(json.dumps({"key": {"checkpoint": "old"},
                                                      "date": "2026-12-07"}))
    with pytest.raises(SystemExit, match="BENCH_RESNET_COST_MODES=before"):
        bench.read_back("before", tmp_path / "model.pt")
    (tmp_path / "before.json").write_text(json.dumps({"key": {"checkpoint": "new"},
                                                      "date": "2026-12-07"}))
    assert bench.read_back("before", tmp_path / "model.pt")["date"] == "2026-12-07"


def test_the_winner_is_timed_from_the_search_start(tmp_path, monkeypatch):
    """winner_s: the winner's trial's datetime_complete (Optuna's local time) less the start."""
    import sqlite3
    from datetime import datetime, timedelta

    monkeypatch.setattr(bench, "WORK", tmp_path)
    out = tmp_path / "after" / "out"
    out.mkdir(parents=True)
    (out / "optimize.json").write_text(json.dumps({"devices": {"d": {"winner": {"trial": 3}}}}))
    end = datetime(2026, 12, 7, 11, 0, 0).astimezone()
    with sqlite3.connect(out / "optuna.db") as db:
        db.execute("CREATE TABLE trials (number INTEGER, datetime_complete TEXT)")
        db.execute("INSERT INTO trials VALUES (3, ?)",
                   (str((end - timedelta(seconds=400)).replace(tzinfo=None)),))
    record = {"date": end.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": 1000.0}
    assert bench.winner_seconds("after", record) == 600.0
